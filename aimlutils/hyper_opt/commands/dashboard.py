"""``optimize.py dashboard``: optuna-dashboard on the study's storage, reachable from this machine only.

It binds to 127.0.0.1: a dashboard can change a study (notes, trial states), so it is not offered to
the cluster's network; reach it from a laptop through an SSH tunnel (the docs show how).
"""

from __future__ import annotations

import argparse
import getpass
import importlib.util
import socket
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from rich.console import Console

from aimlutils.hyper_opt.commands.common import load_for_study, say
from aimlutils.hyper_opt.commands.report import NO_STUDY_EXIT_CODE, no_study, open_existing
from aimlutils.hyper_opt.errors import CONFIG_ERROR_EXIT_CODE

HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``optimize.py dashboard`` beside ``hyper`` and ``model``."""
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port on {HOST} (default {DEFAULT_PORT})"
    )


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # Ctrl-C does not wait for open browser connections


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # the page polls every few seconds; a line per request would bury the URL


def dashboard(args: argparse.Namespace, console: Console) -> int:
    """Serve optuna-dashboard for the study until Ctrl-C.

    Example (from a shell)::

        python optimize.py dashboard hyper.yml --port 8081
    """
    if importlib.util.find_spec("optuna_dashboard") is None:
        say(console, "The dashboard needs optuna-dashboard: pip install 'aimlutils[dashboard]'")
        return CONFIG_ERROR_EXIT_CODE
    if not 1 <= args.port <= 65535:
        say(console, f"--port must be between 1 and 65535, got {args.port}")
        return CONFIG_ERROR_EXIT_CODE
    cfg = load_for_study(args.hyper, args.model)
    storage = open_existing(cfg)
    if storage is None:
        say(console, no_study(cfg))
        return NO_STUDY_EXIT_CODE
    import optuna_dashboard

    try:
        server = make_server(
            HOST, args.port, optuna_dashboard.wsgi(storage), server_class=_Server, handler_class=_QuietHandler
        )
    except OSError as err:
        say(
            console, f"Cannot listen on {HOST}:{args.port} ({err.strerror}); choose a free port with --port N"
        )
        return 1
    url = f"http://{HOST}:{args.port}/dashboard/"
    say(console, f"Dashboard of study {cfg.study_name!r} ({cfg.storage}) at {url}  (Ctrl-C stops it)")
    tunnel = f"ssh -N -L {args.port}:{HOST}:{args.port} {getpass.getuser()}@{socket.gethostname()}"
    say(console, f"From a laptop: {tunnel}  then open {url}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        say(console, "Dashboard stopped.")
    finally:
        server.server_close()
    return 0

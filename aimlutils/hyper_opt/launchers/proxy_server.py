"""The storage proxy's process: ``python -m aimlutils.hyper_opt.launchers.proxy_server hyper.yml model.yml``.

It serves Optuna's gRPC proxy in front of the study's database until the study is done, a newer
proxy replaces it, or a signal (:mod:`aimlutils.hyper_opt.storage.proxy` has the workers' side).
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

import optuna
from optuna.trial import TrialState

from aimlutils.hyper_opt import _optuna, schedulers
from aimlutils.hyper_opt.config import ConfigError, RunConfig, load_config
from aimlutils.hyper_opt.lifeline import watch_parent
from aimlutils.hyper_opt.logs import configure_logging
from aimlutils.hyper_opt.paths import keep_private
from aimlutils.hyper_opt.storage import open_storage
from aimlutils.hyper_opt.storage.proxy import ProxyAddress, TokenCheck, answers, study_token

# Named, not __name__: run with -m, this module is __main__, outside the package's logger.
logger = logging.getLogger("aimlutils.hyper_opt.launchers.proxy_server")

#: How often a proxy looks whether its study is done.
DONE_CHECK_S = 10.0
#: How long a study stays done before its proxy ends: its workers still ask the budget, record
#: and leave through it.
DONE_GRACE_S = 30.0


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _addresses(cfg: RunConfig, in_job: bool) -> tuple[str, str]:
    """``(listen on, tell workers)``: loopback for a local run; in a job, the node's own address
    (the one its host name resolves to), not every interface; ``optuna.proxy.host`` when given."""
    section = cfg.optuna.proxy_section
    wanted = section.host if section is not None else None
    if wanted is not None:
        return wanted, wanted
    if not in_job:
        return "127.0.0.1", "127.0.0.1"
    node = socket.gethostname()
    return node, node


def _study_done(study: optuna.Study, n_trials: int) -> bool:
    trials = study.get_trials(deepcopy=False)
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    return done >= n_trials and not any(t.state == TrialState.RUNNING for t in trials)


def serve(cfg: RunConfig) -> int:
    """Run the study's proxy until the study is done, a newer proxy replaces it, or a signal."""
    section = cfg.optuna.proxy_section
    if section is None:
        raise ValueError("optuna.proxy is off for this study")
    job = schedulers.current_job(os.environ)
    listen, advertised = _addresses(cfg, job is not None)
    port = section.port or _free_port(listen)
    backend = open_storage(
        cfg.storage,
        wait_s=cfg.optuna.storage_wait_s,
        connections=section.connections,
        name=f"aimlutils proxy {cfg.study_name}",
        cached=True,  # the workers' reads of the study reach the database as new trials only
    )

    check = TokenCheck(study_token(cfg.paths, make=True))
    try:
        server = _optuna.grpc_proxy_server(backend, f"{listen}:{port}", check.server_interceptor())
    except RuntimeError as err:
        logger.error(
            "cannot listen on %s:%d (%s): set optuna.proxy.host to this node's address", listen, port, err
        )
        return 1
    server.start()
    me = ProxyAddress(
        advertised,
        port,
        os.getpid(),
        socket.gethostname(),
        job[1].job_id if job else None,
        datetime.datetime.now().isoformat(timespec="seconds"),
    )
    if not answers(me, timeout=60):
        logger.error("the proxy did not start listening on %s:%d", listen, port)
        return 1
    me.write(cfg.paths.proxy_address)
    logger.info("storage proxy for %s listening at %s", cfg.storage, me)
    study = optuna.load_study(study_name=cfg.study_name, storage=backend)
    code = _until_done(cfg, study, me)
    if check.refused:
        logger.warning("refused %d call(s) without the study's token", check.refused)
    return code


def _until_done(cfg: RunConfig, study: optuna.Study, me: ProxyAddress) -> int:
    """Wait until the study is done, a newer proxy replaces this one, or a signal."""
    done_since: float | None = None
    while not stopped.is_set():
        stopped.wait(DONE_CHECK_S)
        if ProxyAddress.read(cfg.paths.proxy_address) != me:
            logger.info("another proxy took over the study; stopping")
            return 0
        if not _study_done(study, cfg.optuna.n_trials):
            done_since = None
        elif done_since is None:
            done_since = time.monotonic()
        elif time.monotonic() - done_since >= DONE_GRACE_S:
            logger.info("the study has been done for %.0f s; stopping the proxy", DONE_GRACE_S)
            cfg.paths.proxy_address.unlink(missing_ok=True)
            return 0
    logger.info("stopped by a signal")
    return 0


stopped = threading.Event()


def _stop(signum: int, frame: FrameType | None) -> None:
    stopped.set()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aimlutils-proxy", description="Serve a study's storage proxy.")
    parser.add_argument("hyper", help="hyper.yml (the copy in save_path)")
    parser.add_argument("model", help="model.yml (the copy in save_path)")
    args = parser.parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(signum, _stop)
    watch_parent(signal.SIGTERM)  # started by a local optimize.py: it goes when optimize.py does
    try:
        cfg = load_config(args.hyper, args.model, objective_given=True)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return err.exit_code
    keep_private(cfg.save_path, cfg.optuna.readable_by)
    configure_logging(cfg.log_file, prefix="proxy")
    started = time.monotonic()
    code = serve(cfg)
    logger.info("proxy ran %.0f s", time.monotonic() - started)
    # The gRPC server's threads are daemons of a blocking call; leave without waiting for them.
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())

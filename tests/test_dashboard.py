"""``optimize.py dashboard``: optuna-dashboard on the study's storage, on loopback only."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest

from aimlutils.hyper_opt import cli
from aimlutils.hyper_opt.config import load_config
from aimlutils.hyper_opt.coordination import study as study_lib
from aimlutils.hyper_opt.storage import open_storage
from tests.conftest import needs_module

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str, server: subprocess.Popen[str]) -> object:
    """``GET url`` once ``server`` answers; ``None`` if it exits first.

    The server may take long to start on a loaded machine (it imports optuna-dashboard, which
    imports scikit-learn): it is waited for until it listens or dies, the deadline only a guard.
    A request that reaches it before it serves waits in its listen queue, hence the long timeout.
    """
    deadline = time.monotonic() + 300
    while True:
        try:
            with urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310 - loopback URL built here
                return json.load(response)
        except (urllib.error.URLError, ConnectionError):
            if server.poll() is not None:
                return None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.parametrize("storage", [None, "sqlite:///study.db"], ids=["journal", "sqlite"])
def test_dashboard_serves_the_study_on_loopback(study_files, storage):
    needs_module("optuna_dashboard")
    hyper, model = study_files(**({"storage": storage} if storage else {}))
    cfg = load_config(hyper, model, base_dir=hyper.parent)
    study, _ = study_lib.create_or_load(cfg, open_storage(cfg.storage), 1)
    study.add_trial(
        optuna.trial.create_trial(params={"lr": 0.5}, distributions=cfg.space.distributions, value=0.04)
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "optimize.py"), "dashboard", str(hyper), str(model), "--port", str(port)],
        cwd=hyper.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        studies = get_json(f"http://127.0.0.1:{port}/api/studies", proc)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    assert cfg.study_name in json.dumps(studies), out
    assert f"at http://127.0.0.1:{port}/dashboard/" in out
    assert f"ssh -N -L {port}:127.0.0.1:{port} " in out
    assert proc.returncode == 0, out


def test_dashboard_on_a_busy_port_or_missing_study_says_what_to_do(study_files, capsys):
    needs_module("optuna_dashboard")
    hyper, model = study_files()
    assert cli.main(["dashboard", str(hyper), str(model)]) == 1
    assert "No study" in capsys.readouterr().out
    cfg = load_config(hyper, model)
    study_lib.create_or_load(cfg, open_storage(cfg.storage), 1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["dashboard", str(hyper), str(model), "--port", str(port)]) == 1
    assert f"Cannot listen on 127.0.0.1:{port}" in capsys.readouterr().out
    assert cli.main(["dashboard", str(hyper), "--port", "70000"]) == 2
    assert "--port must be between 1 and 65535, got 70000" in capsys.readouterr().out

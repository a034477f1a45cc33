"""Storage outages are waited out: PostgreSQL and MariaDB stopped, Redis restarted with its data, a
journal file that fails with EIO. Every worker exits 0, exactly n_trials finish, nothing runs twice.

The database tests stop the machine's real servers and start them again in a ``finally``.
"""

from __future__ import annotations

import csv
import errno
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from aimlutils.hyper_opt.api import open_study, read_config
from aimlutils.hyper_opt.base_objective import BaseObjective
from aimlutils.hyper_opt.worker import Worker
from tests.conftest import MODEL, hyper_config, service_url, under_ci
from tests.test_local_run import load_study, start_optimize, states

# They stop the machine's databases: no other test may use them meanwhile.
pytestmark = pytest.mark.exclusive

OUTAGE_S = 30.0


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _wait_port(port: int, up: bool, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while _port_open(port) != up:
        if time.monotonic() > deadline:
            raise TimeoutError(f"port {port} did not go {'up' if up else 'down'} within {timeout} s")
        time.sleep(0.2)


def _postgres(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[0]
    extra = ["-m", "fast"] if action == "stop" else []
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action, *extra],
        check=True,
        timeout=120,
    )


def _mariadb(action: str) -> None:
    if action == "stop":
        subprocess.run(["mysqladmin", "-h", "127.0.0.1", "-uroot", "shutdown"], check=True, timeout=120)
    else:
        subprocess.run(
            ["start-stop-daemon", "--start", "--oknodo", "--background", "--exec", "/usr/sbin/mariadbd"],
            check=True,
            timeout=120,
        )


SERVERS: dict[str, tuple[int, Callable[[str], None]]] = {
    "postgresql": (5432, _postgres),
    "mysql": (3306, _mariadb),
}


@pytest.fixture
def outage() -> Iterator[Callable[[str], None]]:
    """``outage(kind)``: stop that server for OUTAGE_S seconds; it runs again afterwards, whatever happens."""
    stopped: list[str] = []

    def run(kind: str) -> None:
        port, control = SERVERS[kind]
        stopped.append(kind)
        control("stop")
        _wait_port(port, up=False)
        time.sleep(OUTAGE_S)  # the outage itself: what the workers must live through
        control("start")
        _wait_port(port, up=True)
        stopped.remove(kind)

    yield run
    for kind in stopped:
        port, control = SERVERS[kind]
        control("start")
        _wait_port(port, up=True)


def _some_trials_done(hyper: Path, model: Path, n: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if sum(t.state == TrialState.COMPLETE for t in load_study(hyper, model).get_trials()) >= n:
                return
        except KeyError:  # the study does not exist yet
            pass
        time.sleep(0.3)
    raise AssertionError(f"fewer than {n} trials completed before the outage; optimize.py: {proc.poll()}")


def _exactly_finished(hyper: Path, model: Path, n_trials: int) -> None:
    study = load_study(hyper, model)
    final = states(study)
    assert final.get("COMPLETE", 0) + final.get("PRUNED", 0) == n_trials and "RUNNING" not in final, final
    with open(hyper.parent / "results" / "trial_results.csv", newline="") as fh:
        numbers = [row["trial"] for row in csv.DictReader(fh)]
    assert len(numbers) == len(set(numbers))  # no trial recorded twice
    finished = [t for t in study.get_trials() if t.state.is_finished()]
    assert len(numbers) == len(finished)


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_a_database_stopped_for_30_s_is_waited_out(study_files, outage, kind):
    url = service_url(kind)
    hyper, model = study_files(test={"sleep": 0.5, "steps": 4}, storage=url, n_trials=24)
    proc = start_optimize(hyper, model, "--workers", "4")
    try:
        _some_trials_done(hyper, model, 4, proc)
        outage(kind)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out  # no worker failed
    _exactly_finished(hyper, model, 24)
    log = (hyper.parent / "results" / "log.txt").read_text()
    assert "does not answer" in log and "answers again" in log
    assert "Traceback" not in log


def test_an_outage_longer_than_the_limit_stops_the_workers_and_a_reload_finishes(study_files, outage):
    url = service_url("postgresql")
    hyper, model = study_files(test={"sleep": 0.5, "steps": 4}, storage=url, n_trials=16, storage_wait_s=8)
    proc = start_optimize(hyper, model, "--workers", "3")
    try:
        _some_trials_done(hyper, model, 3, proc)
        outage("postgresql")
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out  # the workers stopped
    logs = [p.read_text() for p in (hyper.parent / "results" / "workers").glob("worker-*.log")]
    stopped = [log for log in logs if "did not answer for 8 s (optuna.storage_wait_s)" in log]
    assert stopped, logs
    # The stopping worker says why in one line (a thread that gave up too may add its traceback).
    assert any("stopping: the storage" in log for log in stopped), stopped
    reload = start_optimize(hyper, model, "--workers", "3", "--reload")
    out, _ = reload.communicate(timeout=600)
    assert reload.returncode == 0, out
    _exactly_finished(hyper, model, 16)


def test_redis_restarted_with_its_data_is_waited_out(study_files, tmp_path):
    if shutil.which("redis-server") is None:
        if under_ci():
            pytest.fail("redis-server is not installed")
        pytest.skip("needs redis-server")
    port = 6391
    data = tmp_path / "redis"
    data.mkdir()

    def redis(action: str) -> None:
        if action == "start":
            subprocess.run(
                ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", str(port),
                 "--appendonly", "yes", "--dir", str(data), "--save", ""],
                check=True, timeout=60,
            )  # fmt: skip
            _wait_port(port, up=True)
        else:
            subprocess.run(["redis-cli", "-p", str(port), "shutdown"], check=False, timeout=60)
            _wait_port(port, up=False)

    redis("start")
    try:
        hyper, model = study_files(
            test={"sleep": 0.5, "steps": 4}, storage=f"redis://127.0.0.1:{port}/0", n_trials=16
        )
        proc = start_optimize(hyper, model, "--workers", "3")
        _some_trials_done(hyper, model, 3, proc)
        redis("stop")
        time.sleep(10)  # the outage itself
        redis("start")
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out
        _exactly_finished(hyper, model, 16)
    finally:
        redis("stop")


class _Sleepy(BaseObjective):
    def train(self, trial: optuna.trial.BaseTrial, conf: dict) -> dict:  # type: ignore[type-arg]
        time.sleep(0.2)
        return {"val_loss": (conf["optimizer"]["learning_rate"] - 0.3) ** 2}


def test_a_journal_file_failing_with_eio_is_waited_out(tmp_path, monkeypatch):
    hyper = hyper_config(tmp_path / "results", tmp_path / "unused.py", n_trials=20)
    del hyper["optuna"]["objective"]
    cfg = read_config(hyper, dict(MODEL), objective=_Sleepy)
    open_study(cfg, 4)
    failing = threading.Event()
    append, read = JournalFileBackend.append_logs, JournalFileBackend.read_logs

    def flaky(real):  # type: ignore[no-untyped-def]
        def method(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            if failing.is_set():
                raise OSError(errno.EIO, "Input/output error", str(self._file_path))
            return real(self, *args, **kwargs)

        return method

    monkeypatch.setattr(JournalFileBackend, "append_logs", flaky(append))
    monkeypatch.setattr(JournalFileBackend, "read_logs", flaky(read))
    results: list[object] = []

    def work(index: int) -> None:
        try:
            results.append(Worker(cfg, index, 4, objective_class=_Sleepy).run())
        except BaseException as err:
            results.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    storage = cfg.storage
    study = optuna.load_study(study_name=cfg.study_name, storage=optuna.storages.JournalStorage(
        JournalFileBackend(storage.location)))  # fmt: skip
    deadline = time.monotonic() + 120
    while sum(t.state == TrialState.COMPLETE for t in study.get_trials()) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    failing.set()
    time.sleep(3)  # the outage itself
    failing.clear()
    for t in threads:
        t.join(timeout=300)
    assert all(isinstance(r, int) for r in results), results  # every worker ended normally
    assert sum(results) == 20  # type: ignore[arg-type]
    final = [t.state for t in study.get_trials()]
    assert final.count(TrialState.COMPLETE) == 20 and TrialState.RUNNING not in final

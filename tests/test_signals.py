"""A stopped optimize.py leaves nothing behind: no worker, no process a command objective started.

Outcomes are decided by waiting for them with generous deadlines, never by how long they took.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

from aimlutils.hyper_opt.config import load_config
from aimlutils.hyper_opt.lifeline import Lifeline
from tests.conftest import MODEL, ROOT, hyper_config, run_optimize
from tests.test_local_run import load_study, start_optimize, states

#: What optimize.py returns when stopped by each signal (SIGKILL: it never returns).
EXIT_CODES = {signal.SIGTERM: 143, signal.SIGHUP: 129, signal.SIGKILL: -signal.SIGKILL}


def wait_for(condition: Callable[[], object], timeout_s: float = 120.0) -> bool:
    """Poll ``condition`` until it holds or the deadline passes; returns whether it held."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _processes() -> dict[int, tuple[int, list[str]]]:
    """Live processes (zombies left out): pid -> (parent pid, command line)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            out[int(entry.name)] = (int(fields[1]), argv)
    return out


def worker_pids(save_path: Path) -> list[int]:
    """The live worker processes of the study in ``save_path``."""
    return [
        pid
        for pid, (_, argv) in _processes().items()
        if "aimlutils.hyper_opt.worker" in argv and any(str(save_path) in a for a in argv)
    ]


def training(hyper: Path, model: Path) -> set[int]:
    """The running trials that have reported a step: well into their training."""
    try:
        trials = load_study(hyper, model).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    except Exception:  # no study yet
        return set()
    return {t.number for t in trials if t.intermediate_values}


def alive(pids: list[int]) -> list[int]:
    live = _processes()
    return [pid for pid in pids if pid in live]


@pytest.fixture(autouse=True)
def hangups_not_ignored() -> Iterator[None]:
    """A suite started under ``nohup`` hands an ignored SIGHUP to every optimize.py it starts,
    which then rightly goes on through a hangup: these tests are about one that is not ignored."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGHUP, previous)


@pytest.fixture
def launch() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """``start_optimize``; whatever still runs at the test's end is stopped with SIGTERM."""
    procs: list[subprocess.Popen[str]] = []

    def start(hyper: Path, model: Path, *args: str) -> subprocess.Popen[str]:
        procs.append(start_optimize(hyper, model, *args))
        return procs[-1]

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL], ids=lambda s: s.name)
def test_a_stopped_optimize_py_leaves_no_worker_and_the_reload_finishes(study_files, launch, signum):
    n_trials = 30
    # Trials of two 2-second steps: the signal comes in the second step of the trials seen.
    hyper, model = study_files(test={"sleep": 2.0, "steps": 2}, n_trials=n_trials)
    cfg = load_config(hyper, model, base_dir=hyper.parent)
    proc = launch(hyper, model, "--workers", "20")
    # The first trial trains while most of the 20 workers (2 cores here) are still starting up:
    # importing, loading the study, building the objective.
    seen: set[int] = set()
    assert wait_for(lambda: seen.update(training(hyper, model)) or seen), proc
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_CODES[signum], out
    if signum != signal.SIGKILL:
        assert f"{signum.name}: stopping the workers" in out and "set optuna.reload: 1" in out
    assert wait_for(lambda: not worker_pids(cfg.save_path)), worker_pids(cfg.save_path)
    study = load_study(hyper, model)
    counts = states(study)
    # Each interrupted trial was failed by its own worker; those seen training had their
    # parameters queued again.
    assert "RUNNING" not in counts, counts
    assert {study.trials[n].state for n in seen} == {TrialState.FAIL}, counts
    queued = {t.user_attrs.get("retry_of") for t in study.trials if t.state == TrialState.WAITING}
    assert seen <= queued, (seen, queued)

    data = yaml.safe_load(model.read_text())
    data["test"]["sleep"] = 0.0  # the rest of the study, quickly
    model.write_text(yaml.safe_dump(data))
    again = run_optimize(hyper, model, "--reload", "--workers", "4")
    assert again.returncode == 0, again.stdout + again.stderr
    counts = states(load_study(hyper, model))
    assert "RUNNING" not in counts and "WAITING" not in counts, counts
    assert counts.get("COMPLETE", 0) + counts.get("PRUNED", 0) == n_trials, counts
    assert not worker_pids(cfg.save_path)


def test_closing_the_terminal_stops_the_workers(study_files):
    """The SSH session closes: SIGHUP, and a terminal that can no longer be written to."""
    hyper, model = study_files(test={"sleep": 2.0, "steps": 2}, n_trials=20)
    cfg = load_config(hyper, model, base_dir=hyper.parent)
    argv = [sys.executable, str(ROOT / "optimize.py"), str(hyper), str(model), "--workers", "4"]
    pid, terminal = pty.fork()  # optimize.py leads a session whose terminal is `terminal`
    if pid == 0:  # pragma: no cover - the child
        try:
            os.chdir(hyper.parent)
            os.execv(argv[0], argv)  # noqa: S606 (no shell wanted)
        finally:
            os._exit(127)

    def drained_and_training() -> bool:
        while select.select([terminal], [], [], 0)[0]:
            os.read(terminal, 65536)  # as a terminal shows it, so optimize.py never blocks on it
        return bool(training(hyper, model))

    try:
        assert wait_for(drained_and_training)
    finally:
        os.close(terminal)  # the terminal hangs up
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 129
    assert wait_for(lambda: not worker_pids(cfg.save_path)), worker_pids(cfg.save_path)
    counts = states(load_study(hyper, model))
    assert "RUNNING" not in counts and counts.get("FAIL", 0) >= 1, counts


# A stand-in worker: its stop handler, then the lifeline watched once told to, then waiting.
WATCHER = textwrap.dedent(
    """\
    import signal, sys, time
    from aimlutils.hyper_opt.lifeline import watch_parent
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(print("stopped") or 0))
    sys.stdin.readline()
    print("watching", flush=True)
    watch_parent() or print("no lifeline")
    time.sleep(120)
    """
)


def test_a_worker_whose_launcher_is_gone_before_it_watches_stops_at_once():
    """As when optimize.py dies while the worker is still importing: the end of the pipe stays."""
    lifeline = Lifeline()
    proc = subprocess.Popen(
        [sys.executable, "-c", WATCHER],
        env={**os.environ, **lifeline.env()},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        **lifeline.popen_kwargs(),
    )
    lifeline.close()
    out, _ = proc.communicate("go\n", timeout=60)
    assert proc.returncode == 0 and out.split() == ["watching", "stopped"], out


# Starts a child that would outlive it, says who they are, and runs until stopped.
COMMAND = textwrap.dedent(
    """\
    #!/bin/sh
    sleep 300 &
    echo "$$ $!" > pids.txt
    wait
    """
)


@pytest.mark.parametrize("victim", ["worker", "optimize.py"])
def test_a_killed_worker_leaves_no_process_of_its_command(tmp_path, launch, victim):
    script = tmp_path / "train.sh"
    script.write_text(COMMAND)
    script.chmod(0o755)
    data = hyper_config(tmp_path / "results", script, n_trials=1)
    data["optuna"]["objective"] = {"command": f"{script} {{parameters}}"}
    hyper, model = tmp_path / "hyper.yml", tmp_path / "model.yml"
    hyper.write_text(yaml.safe_dump(data))
    model.write_text(yaml.safe_dump(MODEL))
    cfg = load_config(hyper, model, base_dir=tmp_path)
    proc = launch(hyper, model, "--workers", "1")
    pids_file, mark = cfg.save_path / "trials" / "0" / "pids.txt", cfg.save_path / "running" / "0.json"
    assert wait_for(lambda: pids_file.exists() and pids_file.read_text().endswith("\n") and mark.exists())
    worker = json.loads(mark.read_text())["pid"]
    command = [int(p) for p in pids_file.read_text().split()]  # the script and its `sleep`
    guards = [
        pid
        for pid, (ppid, argv) in _processes().items()
        if ppid == worker and any(a.endswith("lifeline.py") for a in argv)
    ]
    assert len(guards) == 1
    # The worker killed: its guard stops the command. optimize.py killed: the worker stops as if
    # told to, and stops the command itself.
    os.kill(worker if victim == "worker" else proc.pid, signal.SIGKILL)
    proc.communicate(timeout=120)
    everyone = [worker, *command, *guards]
    assert wait_for(lambda: not alive(everyone)), alive(everyone)
    trial = load_study(hyper, model).trials[0]
    assert trial.state.name == "FAIL", trial.state  # swept by the launcher, or failed by its worker

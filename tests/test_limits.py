"""A study's limits in time: ``optuna.trial_timeout_s`` for one trial."""

from __future__ import annotations

import csv
import getpass
import os
import signal
import subprocess
import sys
import textwrap
import time

import yaml

from aimlutils.hyper_opt.api import read_config
from aimlutils.hyper_opt.coordination.jobs import JobRecord, append_jobs
from tests.conftest import ROOT, hyper_config, run_optimize

# Trial 0 runs far past any limit: asleep, or in epochs that check for a request to stop.
OBJECTIVE = textwrap.dedent(
    """
    import os, time
    from pathlib import Path
    from aimlutils.hyper_opt.base_objective import *
    from aimlutils.hyper_opt.utils import stop_if_requested

    class Objective(BaseObjective):
        def train(self, trial, conf):
            if trial.number == 0:
                if conf["test"]["checks"]:
                    for epoch in range(36000):
                        time.sleep(0.1)
                        Path(conf["test"]["saved"]).write_text(str(epoch))  # the checkpoint
                        stop_if_requested()
                time.sleep(3600)
            return {"val_loss": conf["optimizer"]["learning_rate"]}
    """
)


def _study(tmp_path, checks: bool, **optuna):
    (tmp_path / "objective.py").write_text(OBJECTIVE)
    hyper = hyper_config(tmp_path / "results", tmp_path / "objective.py", n_trials=3, **optuna)
    model = {
        "optimizer": {"learning_rate": 0.1},
        "test": {"checks": checks, "saved": str(tmp_path / "saved")},
    }
    (tmp_path / "hyper.yml").write_text(yaml.safe_dump(hyper))
    (tmp_path / "model.yml").write_text(yaml.safe_dump(model))
    return tmp_path / "hyper.yml", tmp_path / "model.yml"


def _start(hyper, model, workers):
    """``optimize.py`` in the background, its output kept."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "optimize.py"), str(hyper), str(model), "--workers", str(workers)],
        cwd=hyper.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _status(hyper, model):
    return subprocess.run(
        [sys.executable, str(ROOT / "optimize.py"), "status", str(hyper), str(model)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _rows(tmp_path):
    with open(tmp_path / "results" / "trial_results.csv") as fh:
        return {int(r["trial"]): r for r in csv.DictReader(fh)}


def test_a_sleeping_trial_past_its_timeout_is_interrupted_and_the_study_goes_on(tmp_path):
    hyper, model = _study(tmp_path, checks=False, trial_timeout_s=2, trial_timeout_grace_s=1)
    done = run_optimize(hyper, model, "--workers", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = _rows(tmp_path)
    assert rows[0]["state"] == "FAIL" and rows[0]["fail_reason"] == "timeout", rows[0]
    assert float(rows[0]["duration_s"]) < 600  # asleep for 3600 s: it was interrupted
    assert [rows[n]["state"] for n in (1, 2, 3)] == ["COMPLETE"] * 3  # not queued again, not counted
    log = (tmp_path / "results" / "log.txt").read_text()
    assert "ran past optuna.trial_timeout_s (2 s)" in log, log


def test_a_trial_that_checks_leaves_at_its_checkpoint(tmp_path):
    hyper, model = _study(tmp_path, checks=True, trial_timeout_s=2, trial_timeout_grace_s=3600)
    done = run_optimize(hyper, model, "--workers", "1", env={**os.environ})
    assert done.returncode == 0, done.stdout + done.stderr
    rows = _rows(tmp_path)
    assert rows[0]["state"] == "FAIL" and rows[0]["fail_reason"] == "timeout", rows[0]
    assert (tmp_path / "saved").exists()  # it saved, then left on the request (the grace is an hour)
    assert [rows[n]["state"] for n in (1, 2, 3)] == ["COMPLETE"] * 3


FAST = textwrap.dedent(
    """
    import time
    from aimlutils.hyper_opt.base_objective import *

    class Objective(BaseObjective):
        def train(self, trial, conf):
            time.sleep(0.5)
            return {"val_loss": conf["optimizer"]["learning_rate"]}
    """
)


def _budget_study(tmp_path, n_trials=1000, **optuna):
    (tmp_path / "objective.py").write_text(FAST)
    hyper = hyper_config(tmp_path / "results", tmp_path / "objective.py", n_trials=n_trials, **optuna)
    (tmp_path / "hyper.yml").write_text(yaml.safe_dump(hyper))
    (tmp_path / "model.yml").write_text(yaml.safe_dump({"optimizer": {"learning_rate": 0.1}}))
    return tmp_path / "hyper.yml", tmp_path / "model.yml"


def test_a_time_budget_stops_the_study_before_its_n_trials(tmp_path):
    hyper, model = _budget_study(tmp_path, time_budget_s=3)
    done = run_optimize(hyper, model, "--workers", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "its time budget (optuna.time_budget_s = 3 s) is spent" in done.stdout, done.stdout
    rows = _rows(tmp_path)
    assert 0 < len(rows) < 1000 and all(r["state"] == "COMPLETE" for r in rows.values())
    status = _status(hyper, model)
    assert "left)" in status.stdout and "time budget" in status.stdout, status.stdout + status.stderr


def test_a_budget_of_gpu_hours_counts_each_trials_gpus(tmp_path):
    # One GPU per worker (as CUDA_VISIBLE_DEVICES lists them here): 2 workers x 0.5 s trials.
    hyper, model = _budget_study(tmp_path, gpu_hours=2 / 3600, gpu=True)
    done = run_optimize(hyper, model, "--workers", "2", env={**os.environ, "CUDA_VISIBLE_DEVICES": "0,1"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "its GPU-hours (optuna.gpu_hours = 0.000555556) are spent" in done.stdout, done.stdout
    rows = _rows(tmp_path)
    assert 0 < len(rows) < 1000
    used = sum(float(r["gpu_hours"]) for r in rows.values())
    assert used >= 2 / 3600 * 0.5, rows  # at least the budget's part that finished trials hold
    assert all(float(r["gpu_hours"]) > 0 and r["gpu"] in ("0", "1") for r in rows.values()), rows


# -- checkpoint retention ---------------------------------------------------------------------------

CHECKPOINTING = textwrap.dedent(
    """
    import os, time
    from pathlib import Path
    from aimlutils.hyper_opt.base_objective import *
    from aimlutils.hyper_opt.utils import stop_if_requested

    class Objective(BaseObjective):
        def train(self, trial, conf):
            test = conf["test"]
            events = Path(test["events"])
            folder = self.checkpoint_dir(trial)
            saved = folder / "epoch"
            first = int(saved.read_text()) + 1 if saved.exists() else 0
            if first:
                (events / f"continued-{trial.number}").write_text(str(first))
            lr = conf["optimizer"]["learning_rate"]
            for epoch in range(first, 3):
                (folder / "weights.bin").write_bytes(b"w" * 1000)  # a checkpoint each epoch
                saved.write_text(str(epoch))
                if trial.number == test.get("pruned"):
                    raise optuna.TrialPruned()
                if trial.number == test.get("holds") and not first:
                    (events / "inside").write_text(str(os.getpid()))
                    while True:  # until the test's SIGUSR1, after the other trials finished
                        time.sleep(0.05)
                        stop_if_requested()
                if trial.number == test.get("waits"):
                    while not (events / "release").exists():
                        time.sleep(0.05)
            return {"val_loss": abs(lr - 0.01)}
    """
)


def _checkpoint_study(tmp_path, n_trials, keep_best, test):
    events = tmp_path / "events"
    events.mkdir()
    (tmp_path / "objective.py").write_text(CHECKPOINTING)
    hyper = hyper_config(
        tmp_path / "results",
        tmp_path / "objective.py",
        n_trials=n_trials,
        checkpoints={"keep_best": keep_best},
    )
    model = {"optimizer": {"learning_rate": 0.1}, "test": {"events": str(events), **test}}
    (tmp_path / "hyper.yml").write_text(yaml.safe_dump(hyper))
    (tmp_path / "model.yml").write_text(yaml.safe_dump(model))
    return tmp_path / "hyper.yml", tmp_path / "model.yml", events


def _folders(tmp_path):
    return {p.name for p in (tmp_path / "results" / "checkpoints").glob("trial_*")}


def _best(tmp_path, k):
    rows = [r for r in _rows(tmp_path).values() if r["state"] == "COMPLETE"]
    ranked = sorted(rows, key=lambda r: (float(r["value"]), int(r["trial"])))
    return {f"trial_{r['continues'] or r['trial']}" for r in ranked[:k]}


def test_30_trials_keep_the_checkpoints_of_the_3_best_only(tmp_path):
    hyper, model, _ = _checkpoint_study(tmp_path, 30, 3, {"pruned": 4})
    done = run_optimize(hyper, model, "--workers", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _folders(tmp_path) == _best(tmp_path, 3)
    status = _status(hyper, model)
    # 1,001 bytes a chain: 3 kept, 26 finished and 1 pruned removed.
    assert "Checkpoints: 2.9 kB held, 26.4 kB freed" in status.stdout, status.stdout + status.stderr


def test_a_pruned_trials_checkpoints_go_when_it_is_pruned(tmp_path):
    hyper, model, events = _checkpoint_study(tmp_path, 4, 3, {"pruned": 1, "waits": 2})
    proc = _start(hyper, model, workers=1)
    try:
        checkpoints = tmp_path / "results" / "checkpoints"
        deadline = time.monotonic() + 120
        while not (checkpoints / "trial_2").exists():  # trial 2 runs: trial 1 was pruned before it
            assert time.monotonic() < deadline and proc.poll() is None, "trial 2 never started"
            time.sleep(0.05)
        assert not (checkpoints / "trial_1").exists() and (checkpoints / "trial_0").exists()
    finally:
        (events / "release").touch()
        out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out


def test_an_interrupted_chain_keeps_its_checkpoints_while_others_finish(tmp_path):
    hyper, model, events = _checkpoint_study(tmp_path, 8, 1, {"holds": 0})
    proc = _start(hyper, model, workers=2)
    try:
        deadline = time.monotonic() + 180
        while not (events / "inside").exists() or _completed(tmp_path) < 6:
            assert time.monotonic() < deadline and proc.poll() is None, "the other trials never finished"
            time.sleep(0.1)
        # Six trials finished, each followed by a tidy with keep_best 1: trial 0's chain runs on.
        assert "trial_0" in _folders(tmp_path)
        os.kill(int((events / "inside").read_text()), signal.SIGUSR1)  # its job's warning
    finally:
        out, _ = proc.communicate(timeout=300)
    continued = list(events.glob("continued-*"))
    assert len(continued) == 1 and continued[0].read_text() == "1", out  # from its epoch-0 checkpoint
    assert _folders(tmp_path) == _best(tmp_path, 1), out


def _completed(tmp_path):
    try:
        return sum(r["state"] == "COMPLETE" for r in _rows(tmp_path).values())
    except FileNotFoundError:
        return 0


def test_status_sets_the_schedulers_gpu_hours_beside_the_studys_own(tmp_path):
    hyper, model = _budget_study(tmp_path, n_trials=2)
    done = run_optimize(hyper, model, "--workers", "1")  # trials to count: 2 CPU trials, no GPU
    assert done.returncode == 0, done.stdout + done.stderr
    data = yaml.safe_load(hyper.read_text())
    data["slurm"] = {"jobs": 1, "batch": {"t": "10"}}
    hyper.write_text(yaml.safe_dump(data))
    cfg = read_config(hyper, model)
    append_jobs(cfg.paths, [JobRecord("67", 2, "job.sh", "2026-12-08T00:00:00", user=getpass.getuser())])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # The cluster's own answers: the job has ended; its 2 tasks ran 1 h on 2 GPUs and 30 min on 1.
    fakes = {
        "squeue": "exit 0",
        "sacct": "printf '67_0|3600|cpu=4,gres/gpu=2\\n67_1|1800|gres/gpu:a100=1\\n'",
    }
    for name, body in fakes.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    status = subprocess.run(
        [sys.executable, str(ROOT / "optimize.py"), "status", str(hyper), str(model)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert (
        "GPU-hours by the scheduler's accounting: 2.5 for the study's jobs, +2.5 against" in status.stdout
    ), status.stdout + status.stderr

"""A study that cannot succeed stops (the failure budget); one that fails now and then does not."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from aimlutils.hyper_opt.coordination import StudyStop
from aimlutils.hyper_opt.coordination.failures import failure_streak, verdict
from aimlutils.hyper_opt.errors import ExitCode
from aimlutils.hyper_opt.storage import StorageSpec, open_storage
from tests.conftest import MODEL, ROOT, hyper_config, run_optimize

TYPO = """
from aimlutils.hyper_opt.base_objective import *


class Objective(BaseObjective):
    def train(self, trial, conf):
        lr = conf["optimizer"]["learning_rate"]
        if {fails}:
            raise RuntimeError("typo in my training script")
        return {{"val_loss": lr}}
"""


def _study(tmp_path, fails: str, **optuna_section):
    objective = tmp_path / "objective.py"
    objective.write_text(TYPO.format(fails=fails))
    hyper = hyper_config(tmp_path / "results", objective, **optuna_section)
    hyper["log"] = True  # save_path/log.txt
    hyper_path, model_path = tmp_path / "hyper.yml", tmp_path / "model.yml"
    hyper_path.write_text(yaml.safe_dump(hyper))
    model_path.write_text(yaml.safe_dump(MODEL))
    spec = StorageSpec("journal", str(tmp_path / "results" / "study.journal"))
    name = hyper["optuna"]["name"]
    return hyper_path, model_path, lambda: optuna.load_study(study_name=name, storage=open_storage(spec))


def test_an_objective_that_always_fails_stops_the_study_and_says_why(tmp_path):
    hyper, model, load = _study(tmp_path, "True", n_trials=20)
    proc = run_optimize(hyper, model, "--workers", "2")  # ends by itself: no timeout, no signal
    out = proc.stdout + proc.stderr
    assert proc.returncode == ExitCode.STUDY_STOPPED, out
    log = tmp_path / "results" / "log.txt"
    assert "RuntimeError: typo in my training script" in out and str(log) in out, out
    trials = load().trials
    assert all(t.state == TrialState.FAIL for t in trials)
    assert 20 <= len(trials) <= 22, len(trials)  # the budget, and what was running when it was spent
    # One traceback per worker in the log, then one line per repeat.
    text = log.read_text()
    assert 1 <= text.count("Traceback (most recent call last)") <= 2, text
    repeat = r"failed: RuntimeError: typo in my training script \(the traceback of trial \d+; \d+ times\)"
    assert re.search(repeat, text), text
    stop = StudyStop.read(tmp_path / "results" / "stopped.json")
    assert stop is not None and stop.failures >= 20 and stop.log == str(log)
    status = subprocess.run(
        [sys.executable, str(ROOT / "optimize.py"), "status", str(hyper)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "The study stopped: its last" in status.stdout and "typo in my training script" in status.stdout


def test_an_objective_failing_on_a_quarter_of_its_trials_still_reaches_n_trials(tmp_path):
    # At random, but the same draw for a trial number in every run: a quarter on average.
    hyper, model, load = _study(
        tmp_path, "__import__('random').Random(trial.number).random() < 0.25", n_trials=30
    )
    proc = run_optimize(hyper, model, "--workers", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    states = [t.state for t in load().trials]
    assert states.count(TrialState.COMPLETE) == 30 and TrialState.FAIL in states


def test_a_stopped_study_runs_again_on_reload_and_stops_again_if_still_broken(tmp_path):
    hyper, model, load = _study(tmp_path, "True", n_trials=5, max_failures=3)
    assert run_optimize(hyper, model, "--workers", "1").returncode == ExitCode.STUDY_STOPPED
    first = len(load().trials)
    again = run_optimize(hyper, model, "--workers", "1", "--reload")
    assert again.returncode == ExitCode.STUDY_STOPPED, again.stdout + again.stderr
    assert "had stopped" in (tmp_path / "results" / "log.txt").read_text()
    assert len(load().trials) == first + 1  # its streak unbroken: one more failure stops it


def _ended(study: optuna.Study, state: TrialState, failed_by: str | None = None) -> None:
    trial = study.ask()
    record = {"fail_reason": "RuntimeError: x", "failed_by": failed_by} if failed_by else {}
    trial.set_user_attr("record", record)
    study.tell(trial, 1.0 if state == TrialState.COMPLETE else None, state=state)


def test_only_the_objectives_own_failures_in_a_row_count():
    study = optuna.create_study(study_name=f"streak-{uuid.uuid4().hex[:6]}")
    _ended(study, TrialState.FAIL, "objective")
    _ended(study, TrialState.COMPLETE)
    _ended(study, TrialState.FAIL, "objective")
    _ended(study, TrialState.FAIL)  # a node lost, a time limit: says nothing of the objective
    _ended(study, TrialState.FAIL, "objective")
    assert [t.number for t in failure_streak(study)] == [2, 4]
    assert verdict(study, 3, None) is None
    stop = verdict(study, 2, "/s/log.txt")
    assert stop is not None and (stop.failures, stop.last_trial, stop.log) == (2, 4, "/s/log.txt")
    assert verdict(study, None, None) is None  # max_failures: null never stops a study


@pytest.mark.parametrize("value", [0, -1, "many"])
def test_max_failures_must_be_a_positive_number_or_null(tmp_path, value):
    hyper, model, _ = _study(tmp_path, "False", n_trials=2, max_failures=value)
    proc = run_optimize(hyper, model, "--dry-run")
    assert proc.returncode == ExitCode.CONFIG and "optuna.max_failures" in proc.stdout + proc.stderr


def test_a_lowered_n_trials_reaches_the_running_workers_at_their_next_claim(study_files):
    """optimize.py --reload optuna.n_trials=K while a local study runs: its workers stop at K
    (plus what they were running), not at the n_trials they started with."""
    from tests.test_local_run import load_study, start_optimize

    hyper, model = study_files(test={"sleep": 0.3}, n_trials=60)
    proc = start_optimize(hyper, model, "--workers", "2")
    try:
        deadline = time.monotonic() + 240
        study = None
        while time.monotonic() < deadline:  # a guard, not a measure: three trials done
            if study is None and (hyper.parent / "results" / "study.journal").exists():
                study = load_study(hyper, model)
            if study and sum(t.state == TrialState.COMPLETE for t in study.get_trials()) >= 3:
                break
            time.sleep(0.2)
        lowered = run_optimize(hyper, model, "--reload", "optuna.n_trials=4", "--workers", "1")
        assert lowered.returncode == 0, lowered.stdout + lowered.stderr
        done_then = sum(t.state == TrialState.COMPLETE for t in load_study(hyper, model).get_trials())
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    complete = sum(t.state == TrialState.COMPLETE for t in load_study(hyper, model).get_trials())
    assert complete <= max(4, done_then) + 2 + 1 < 60, (complete, done_then)  # + the reload's own worker

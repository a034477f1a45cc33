"""A trial's life (aimlutils.hyper_opt.coordination.lifecycle): a trial ended by someone else while
its worker still ran it is a normal outcome, and two recoveries of one dead trial queue it once."""

from __future__ import annotations

import csv
import threading
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from aimlutils.hyper_opt.coordination import FINISHED_ELSEWHERE, ResultsCsv, TrialLife
from aimlutils.hyper_opt.paths import StudyPaths
from aimlutils.hyper_opt.storage import StorageSpec, open_storage
from tests.conftest import MODEL, hyper_config, run_optimize

# Trial 0 is failed through a storage handle of its own (as recovery or a user at the terminal
# would), while its worker runs it; the objective then returns as if nothing happened.
ENDED_ELSEWHERE_OBJECTIVE = """
from aimlutils.hyper_opt.base_objective import *
from aimlutils.hyper_opt.storage import open_storage, parse_storage
from pathlib import Path


class Objective(BaseObjective):
    def train(self, trial, conf):
        if trial.number == 0:
            section = conf["optuna"]
            save_path = Path(section["save_path"])
            other = open_storage(parse_storage(section.get("storage"), None, save_path, save_path))
            study = optuna.load_study(study_name=section["name"], storage=other)
            study.tell(0, state=optuna.trial.TrialState.FAIL)
        return {"val_loss": conf["optimizer"]["learning_rate"]}
"""


@pytest.mark.parametrize("storage", ["journal", "sqlite"])
def test_a_trial_failed_elsewhere_while_it_runs_leaves_its_worker_going(tmp_path, storage):
    objective = tmp_path / "objective.py"
    objective.write_text(ENDED_ELSEWHERE_OBJECTIVE)
    extra = {"storage": f"sqlite:///{tmp_path / 'study.db'}"} if storage == "sqlite" else {}
    hyper = hyper_config(tmp_path / "results", objective, n_trials=4, **extra)
    hyper_path, model_path = tmp_path / "hyper.yml", tmp_path / "model.yml"
    hyper_path.write_text(yaml.safe_dump(hyper))
    model_path.write_text(yaml.safe_dump(MODEL))

    proc = run_optimize(hyper_path, model_path, "--workers", "1")

    log = (tmp_path / "results" / "log.txt").read_text()
    assert proc.returncode == 0, proc.stdout + proc.stderr + log
    url = extra.get("storage") or None
    spec = StorageSpec("journal", str(tmp_path / "results" / "study.journal")) if url is None else None
    study = optuna.load_study(study_name=hyper["optuna"]["name"], storage=url or open_storage(spec))
    states = [t.state for t in study.trials]
    assert states[0] == TrialState.FAIL and states.count(TrialState.COMPLETE) == 4, states
    assert "Cannot tell" not in log and "Traceback" not in log, log
    assert "trial 0 ended elsewhere (FAIL)" in log, log
    rows = list(csv.DictReader((tmp_path / "results" / "trial_results.csv").open()))
    mine = [r for r in rows if r["trial"] == "0"]
    assert [r["state"] for r in mine] == [FINISHED_ELSEWHERE]
    assert float(mine[0]["val_loss"]) == pytest.approx(study.trials[0].params["lr"])  # its result kept
    assert "finished elsewhere: the study has it FAIL" in mine[0]["fail_reason"]


def test_two_recoveries_of_one_dead_trial_at_once_queue_it_once(tmp_path):
    """Each recovery (a worker's sweep, optimize.py, status) has its own storage handle, as in
    separate processes; all take the dead trial for dead at the same moment."""
    paths = StudyPaths(tmp_path)
    spec = StorageSpec("journal", str(tmp_path / "study.journal"))
    name = f"recover-{uuid.uuid4().hex[:8]}"
    study = optuna.create_study(study_name=name, storage=open_storage(spec))
    recoveries = 6
    for round_ in range(8):
        dead = study.ask()
        dead.suggest_float("x", 0, 1)
        running = study.get_trials(states=(TrialState.RUNNING,))
        lives = [_life(spec, name, paths) for _ in range(recoveries)]
        start = threading.Barrier(recoveries)
        failed: list[bool] = []

        threads = [
            threading.Thread(target=_recover, args=(life, running[0], start, failed)) for life in lives
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        trials = study.get_trials()
        retries = [t for t in trials if t.user_attrs.get("retry_of") == dead.number]
        assert failed.count(True) == 1, f"round {round_}: {failed}"
        assert len(retries) == 1, f"round {round_}: queued {len(retries)} times"
        assert trials[dead.number].state == TrialState.FAIL
        study.tell(study.ask(), 0.0)  # the retry runs, so the next round's trial is new


def _recover(
    life: TrialLife, trial: optuna.trial.FrozenTrial, start: threading.Barrier, failed: list[bool]
) -> None:
    start.wait()
    failed.append(life.fail_dead(trial, {"host": "gone", "pid": 1}, "its worker ended"))


def _life(spec: StorageSpec, name: str, paths: StudyPaths) -> TrialLife:
    storage = open_storage(spec)
    study = optuna.load_study(study_name=name, storage=storage)
    return TrialLife(study, storage, paths, ResultsCsv(paths.results_csv), max_retries=3)


def test_a_trial_with_nothing_to_say_is_recorded_with_its_worker(tmp_path):
    """finish() without a record still stores who ran the trial."""
    paths = StudyPaths(tmp_path)
    storage = open_storage(StorageSpec("journal", str(tmp_path / "study.journal")))
    study = optuna.create_study(storage=storage)
    life = TrialLife(study, storage, paths, ResultsCsv(paths.results_csv), {"worker": 3, "host": "h"})
    trial = study.ask()
    told = life.finish(trial, 1.0)
    assert told is not None and study.trials[0].user_attrs["record"] == {"worker": {"worker": 3, "host": "h"}}
    assert Path(paths.results_csv).exists()


def test_a_chain_interrupted_max_failures_times_is_not_queued_again(tmp_path):
    """A trial that reports a new step before every time limit and never ends: bounded as failures are."""
    paths = StudyPaths(tmp_path)
    storage = open_storage(StorageSpec("journal", str(tmp_path / "study.journal")))
    study = optuna.create_study(storage=storage)
    life = TrialLife(study, storage, paths, ResultsCsv(paths.results_csv), max_retries=1, max_failures=3)
    study.enqueue_trial({"x": 0.5})
    for link in range(3):
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        trial.report(float(link), link)  # progress each time: max_retries never runs out
        life.give_back(trial, "interrupted (SIGTERM)")
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL] * 3  # the third is not queued again
    record = trials[2].user_attrs["record"]
    assert (
        record["failed_by"] == "objective"
        and "interrupted 3 times without finishing" in record["fail_reason"]
    )

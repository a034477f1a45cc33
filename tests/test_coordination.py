"""The coordination layer (budget, claim lock, recovery, CSV), one suite run against every storage.

As Optuna's ``StorageTestCase``: each test gets a fresh study on the journal file, SQLite,
PostgreSQL, MySQL/MariaDB and Redis (the real services; under CI a missing one fails).
"""

from __future__ import annotations

import csv
import multiprocessing
import multiprocessing.queues
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from aimlutils.hyper_opt.coordination import recovery
from aimlutils.hyper_opt.coordination.budget import Room, TrialBudget
from aimlutils.hyper_opt.coordination.claim import claim_trial
from aimlutils.hyper_opt.coordination.lifecycle import TrialLife
from aimlutils.hyper_opt.coordination.liveness import Liveness
from aimlutils.hyper_opt.coordination.owners import RunningTrials
from aimlutils.hyper_opt.coordination.records import RECORD_ATTR
from aimlutils.hyper_opt.coordination.recovery import fail_dead_trials, recover_study
from aimlutils.hyper_opt.coordination.results_csv import ResultsCsv
from aimlutils.hyper_opt.coordination.retries import requeue
from aimlutils.hyper_opt.paths import StudyPaths
from aimlutils.hyper_opt.storage import StorageSpec, open_storage, parse_storage
from aimlutils.hyper_opt.storage.locks import FileLock
from tests.conftest import service_url

STORAGES = ["journal", "sqlite", "postgresql", "mysql", "redis"]


@pytest.fixture(params=STORAGES)
def study(request: pytest.FixtureRequest, tmp_path: Path) -> optuna.Study:
    kind = request.param
    if kind == "journal":
        spec = StorageSpec("journal", str(tmp_path / "study.journal"))
    elif kind == "sqlite":
        spec = StorageSpec("sqlite", f"sqlite:///{tmp_path / 'study.db'}")
    else:
        spec = parse_storage(service_url(kind), None, tmp_path, tmp_path)
    storage = open_storage(spec)
    return optuna.create_study(study_name=f"coord-{uuid.uuid4().hex[:8]}", storage=storage)


def _finish(study: optuna.Study, n: int, state: TrialState = TrialState.COMPLETE) -> None:
    for _ in range(n):
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        study.tell(trial, 0.5 if state == TrialState.COMPLETE else None, state=state)


def test_budget_says_start_wait_and_done(study):
    budget = TrialBudget(study, study._storage, n_trials=3)
    assert budget.check() is Room.START
    _finish(study, 1)
    _finish(study, 1, TrialState.PRUNED)
    running = study.ask()
    assert budget.check() is Room.WAIT  # 2 finished + 1 running fill 3; the running one may fail
    study.tell(running, state=TrialState.FAIL)
    assert budget.check() is Room.START
    _finish(study, 1)
    assert budget.check() is Room.DONE


def test_budget_check_changes_nothing(study):
    _finish(study, 2)
    study.ask()
    before = [(t.number, t.state) for t in study.get_trials()]
    assert TrialBudget(study, study._storage, n_trials=3).check() is Room.WAIT
    assert [(t.number, t.state) for t in study.get_trials()] == before


def test_of_two_racing_trials_past_the_budget_the_lower_number_wins(study):
    _finish(study, 2)
    first, second = study.ask(), study.ask()  # numbers 2 and 3, both asked for the last place
    budget = TrialBudget(study, study._storage, n_trials=3)
    assert budget.admits(first.number) and not budget.admits(second.number)


def test_target_met_ends_the_budget(study):
    _finish(study, 1)
    assert TrialBudget(study, study._storage, n_trials=10, target=0.6).check() is Room.DONE
    assert TrialBudget(study, study._storage, n_trials=10, target=0.1).check() is Room.START


def test_claim_marks_the_owner_under_the_lock(study, tmp_path):
    owners = RunningTrials(tmp_path / "running")
    budget = TrialBudget(study, study._storage, n_trials=1)
    lock = FileLock(tmp_path / ".claim.lock")
    trial = claim_trial(study, budget, lock, owners, {"host": "h", "pid": 1})
    assert isinstance(trial, optuna.Trial)
    assert owners.owner(trial.number) == {"host": "h", "pid": 1}
    assert not lock.held
    assert claim_trial(study, budget, lock, owners, {"host": "h", "pid": 1}) is Room.WAIT


def test_threads_claiming_together_never_exceed_the_budget(study, tmp_path):
    owners = RunningTrials(tmp_path / "running")
    got: list[int] = []

    def worker() -> None:
        budget = TrialBudget(study, study._storage, n_trials=5)
        lock = FileLock(tmp_path / ".claim.lock")  # one per worker, as each worker has its own
        while True:
            claimed = claim_trial(study, budget, lock, owners, {"pid": os.getpid()})
            if not isinstance(claimed, optuna.Trial):
                return
            got.append(claimed.number)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == [0, 1, 2, 3, 4]


def test_a_dead_workers_trial_is_failed_and_its_parameters_queued_once(study, tmp_path):
    paths = StudyPaths(tmp_path)
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    RunningTrials.of(paths).mark(trial.number, {"host": os.uname().nodename, "pid": gone.pid})
    assert recover_study(study, study._storage, paths, None, max_retries=1) == [trial.number]
    # A second sweep (another worker, a reload) finds nothing more to do.
    assert recover_study(study, study._storage, paths, None, max_retries=1) == []
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.WAITING]
    assert study.get_trials()[1].params == {} and study.get_trials()[1].user_attrs["retry_of"] == 0
    rows = list(csv.DictReader(paths.results_csv.open()))
    assert [(r["trial"], r["state"]) for r in rows] == [("0", "FAIL")]
    assert "ended during the trial" in rows[0]["fail_reason"]


def test_a_live_workers_trial_is_left_alone(study, tmp_path):
    trial = study.ask()
    owners = RunningTrials(tmp_path / "running")
    owners.mark(trial.number, {"host": os.uname().nodename, "pid": os.getpid()})
    running = study.get_trials(states=(TrialState.RUNNING,))
    assert fail_dead_trials(_life(study, tmp_path), running, Liveness()) == []


def test_a_trial_finished_while_the_sweep_ran_is_left_alone(study, tmp_path, monkeypatch):
    # A sweep works from the list of RUNNING trials it read at its start; with a thousand workers
    # it takes long enough for some of them to finish (their owner file gone) before it gets there.
    monkeypatch.setattr(recovery, "ORPHAN_AFTER_S", 0.0)
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    owners = RunningTrials(tmp_path / "running")
    owners.mark(trial.number, {"host": os.uname().nodename, "pid": os.getpid()})
    running = study.get_trials(states=(TrialState.RUNNING,))
    study.tell(trial, 0.5)
    owners.clear(trial.number)
    assert fail_dead_trials(_life(study, tmp_path), running, Liveness()) == []
    _finish(study, 1)  # nothing the sweep wrote is left to fail the next write
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert RECORD_ATTR not in study.get_trials()[0].user_attrs


def _life(study, folder):
    """The lifecycle of ``study``'s trials, for recovery, with ``folder`` as save_path."""
    paths = StudyPaths(folder)
    return TrialLife(study, study._storage, paths, ResultsCsv(paths.results_csv))


def test_requeue_respects_max_retries(study):
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    frozen = study.tell(trial, state=TrialState.FAIL)
    assert not requeue(study, frozen, max_retries=0)
    assert requeue(study, frozen, max_retries=1)
    assert not requeue(study, frozen, max_retries=1)  # already queued once
    retry = study.get_trials(states=(TrialState.WAITING,))[0]
    assert retry.user_attrs == {"retry_of": 0, "retries": 1}


def _hold(
    path: str, ready: multiprocessing.synchronize.Event, release: multiprocessing.synchronize.Event
) -> None:
    with FileLock(Path(path)):
        ready.set()
        release.wait(60)


def test_file_lock_holds_between_processes_and_threads(tmp_path):
    path = tmp_path / "x.lock"
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(path), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        assert not FileLock(path).acquire(blocking=False)  # held by the other process
    finally:
        release.set()
        holder.join(60)
    mine, other_thread = FileLock(path), []
    assert mine.acquire()
    thread = threading.Thread(target=lambda: other_thread.append(FileLock(path).acquire(blocking=False)))
    thread.start()
    thread.join()
    assert other_thread == [False]  # threads of one process exclude each other too
    mine.release()


def _hold_one_then_take_the_other(
    held: str,
    wanted: str,
    holding: multiprocessing.synchronize.Event,
    asking: multiprocessing.synchronize.Event,
    outcome: multiprocessing.queues.Queue,
) -> None:
    """One thread holds ``held`` until the other, asking for ``wanted``, has it (or failed)."""
    done = threading.Event()

    def hold() -> None:
        with FileLock(Path(held)):
            holding.set()
            done.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    asking.wait(60)
    try:
        with FileLock(Path(wanted)):
            outcome.put("taken")
    except OSError as err:
        outcome.put(f"{type(err).__name__}: {err}")
    finally:
        done.set()
        holder.join(60)


def test_threads_of_two_processes_taking_two_locks_are_no_deadlock(tmp_path):
    # POSIX record locks belong to processes: this process holding A (one thread) and waiting for
    # B (another thread) while the other process holds B and asks for A looks like a deadlock to
    # the kernel (EDEADLK), though each thread holds one lock only.
    a, b = tmp_path / "a.lock", tmp_path / "b.lock"
    ctx = multiprocessing.get_context("spawn")
    holding, asking, outcome = ctx.Event(), ctx.Event(), ctx.Queue()
    other = ctx.Process(target=_hold_one_then_take_the_other, args=(str(b), str(a), holding, asking, outcome))
    other.start()
    mine = FileLock(a)
    waiter_got: list[bool] = []

    def wait_for_b() -> None:
        lock = FileLock(b)
        waiter_got.append(lock.acquire())
        lock.release()

    try:
        assert holding.wait(60)  # the other process holds b
        mine.acquire()
        waiter = threading.Thread(target=wait_for_b)
        waiter.start()  # blocks on b
        time.sleep(0.5)
        asking.set()  # the other process now asks for a, which this one holds
        time.sleep(0.5)
        mine.release()
        assert outcome.get(timeout=60) == "taken"
        waiter.join(60)
        assert waiter_got == [True]
    finally:
        mine.release()
        other.join(60)


def test_csv_rows_from_many_threads_are_all_kept(tmp_path):
    path = tmp_path / "trial_results.csv"

    def write(start: int) -> None:
        out = ResultsCsv(path)
        for n in range(start, start + 25):
            out.append({"trial": n, "state": "COMPLETE", "value": n, f"p{start}": 1})

    threads = [threading.Thread(target=write, args=(s,)) for s in (0, 25, 50, 75)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = list(csv.DictReader(path.open()))
    assert sorted(int(r["trial"]) for r in rows) == list(range(100))

"""What a worker writes to its storage per trial, and what it reads back: a trial commits as often as
in plain Optuna, its first heartbeat rides with its next write, its CSV row is the stored trial, and
a tell that reached the storage before an outage is not told twice. A dead worker's trial is still
found by its heartbeat."""

from __future__ import annotations

import datetime
import sqlite3
import threading
import uuid
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.exceptions import StorageInternalError
from optuna.storages import InMemoryStorage, RDBStorage
from optuna.trial import TrialState

from aimlutils.hyper_opt.api import open_study, read_config
from aimlutils.hyper_opt.base_objective import BaseObjective
from aimlutils.hyper_opt.coordination import RECORD_ATTR, ResultsCsv, RunningTrials, TrialLife
from aimlutils.hyper_opt.paths import StudyPaths
from aimlutils.hyper_opt.storage import StorageSpec, open_storage, parse_storage
from aimlutils.hyper_opt.storage.resilient import ResilientStorage, StorageUnavailable
from aimlutils.hyper_opt.worker import Worker
from tests.conftest import MODEL, hyper_config, service_url

STORAGES = ["journal", "sqlite", "postgresql", "mysql", "redis"]
DATABASES = ["sqlite", "postgresql", "mysql"]


def _spec(kind: str, tmp_path: Path) -> StorageSpec:
    if kind == "journal":
        return StorageSpec("journal", str(tmp_path / "study.journal"))
    if kind == "sqlite":
        return StorageSpec("sqlite", f"sqlite:///{tmp_path / 'study.db'}")
    return parse_storage(service_url(kind), None, tmp_path, tmp_path)


def _worker_study(kind: str, tmp_path: Path) -> optuna.Study:
    """A study on the storage as a worker opens it (cached, one connection); made by optimize.py's."""
    spec = _spec(kind, tmp_path)
    name = f"writes-{uuid.uuid4().hex[:8]}"
    optuna.create_study(study_name=name, storage=open_storage(spec))
    storage = open_storage(spec, connections=1, cached=True)
    return optuna.load_study(study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler(0))


def _hold_record(study: optuna.Study, trial: optuna.Trial, record: dict[str, Any]) -> None:
    """Hold ``record`` for the trial's end, as a worker's lifecycle does."""
    study._storage.writes.hold_attr(study._storage, trial._trial_id, RECORD_ATTR, record)


def _rdb(study: optuna.Study) -> Any:
    storage = study._storage
    assert isinstance(storage, ResilientStorage)
    return getattr(storage.backend, "_backend", storage.backend)


@pytest.mark.parametrize("kind", STORAGES)
@pytest.mark.parametrize("state", [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL])
def test_the_told_trial_is_the_trial_as_stored(kind, state, tmp_path):
    study = _worker_study(kind, tmp_path)
    study.enqueue_trial({"x": 0.25}, user_attrs={"retry_of": 7})
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    trial.suggest_categorical("c", ["a", "b"])
    trial.report(0.7, 0)
    trial.report(0.6, 1)
    trial.set_user_attr("applied", {"x": 0.25})
    life = TrialLife(study, study._storage, StudyPaths(tmp_path), ResultsCsv(tmp_path / "trials.csv"))
    record = {"results": {"val_loss": 0.5}, "worker": {"host": "here", "pid": 1}}
    told = life.finish(trial, 0.5 if state == TrialState.COMPLETE else None, state, record)
    assert told is not None
    stored = study._storage.get_trial(trial._trial_id)
    fields = ["number", "state", "values", "params", "distributions", "user_attrs", "intermediate_values"]
    fields += ["datetime_start", "datetime_complete"]
    assert {f: getattr(told, f) for f in fields} == {f: getattr(stored, f) for f in fields}
    assert told.user_attrs["record"]["results"] == {"val_loss": 0.5}


def test_a_journal_trials_record_rides_with_its_tell_and_costs_no_read(tmp_path, monkeypatch):
    from optuna.storages.journal import JournalFileBackend

    study = _worker_study("journal", tmp_path)
    appended: list[list[dict[str, Any]]] = []
    reads = [0]
    append, read = JournalFileBackend.append_logs, JournalFileBackend.read_logs

    def counted_append(self: Any, logs: list[dict[str, Any]]) -> None:
        appended.append(logs)
        append(self, logs)

    def counted_read(self: Any, log_number_from: int) -> Any:
        reads[0] += 1
        return read(self, log_number_from)

    monkeypatch.setattr(JournalFileBackend, "append_logs", counted_append)
    monkeypatch.setattr(JournalFileBackend, "read_logs", counted_read)
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    appended.clear()
    reads[0] = 0
    study._storage.writes.hold_attr(
        study._storage, trial._trial_id, RECORD_ATTR, {"results": {"val_loss": 0.5}}
    )
    assert (appended, reads[0]) == ([], 0)  # held: no write, and no read of the file for it
    study.tell(trial, 0.5)
    # One append: the record, then the tell.
    assert len(appended) == 1
    assert [("user_attr" in log, "state" in log) for log in appended[0]] == [(True, False), (False, True)]
    stored = study._storage.get_trial(trial._trial_id)
    assert stored.state == TrialState.COMPLETE and stored.user_attrs[RECORD_ATTR] == {
        "results": {"val_loss": 0.5}
    }


@pytest.mark.parametrize("kind", DATABASES)
def test_a_trials_first_heartbeat_rides_with_its_next_write(kind, tmp_path):
    study = _worker_study(kind, tmp_path)
    rdb = _rdb(study)
    statements: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sqlalchemy.event.listen(rdb.engine, "before_cursor_execute", note)

    def heartbeats(trial: optuna.Trial) -> int:
        with rdb.engine.connect() as conn:
            query = "SELECT COUNT(*) FROM trial_heartbeats WHERE trial_id = :id"
            return int(conn.execute(sqlalchemy.text(query), {"id": trial._trial_id}).scalar_one())

    trial = study.ask()
    statements.clear()
    study._storage.record_heartbeat(trial._trial_id)  # as the heartbeat thread does at the start
    assert statements == [] and heartbeats(trial) == 0  # no write of its own
    trial.suggest_float("x", 0, 1)  # the next write carries it, in its transaction
    assert heartbeats(trial) == 1
    study._storage.record_heartbeat(trial._trial_id)  # a minute later: written as it comes
    assert any("trial_heartbeats" in s for s in statements[-3:])
    study.tell(trial, 0.5)
    assert heartbeats(trial) == 1

    # A trial told before anything carried its first heartbeat never writes one.
    short = study.ask()
    study._storage.record_heartbeat(short._trial_id)
    study.tell(short, 0.1)
    assert heartbeats(short) == 0
    # A trial with no write before its second beat gets its heartbeat then.
    quiet = study.ask()
    study._storage.record_heartbeat(quiet._trial_id)
    study._storage.record_heartbeat(quiet._trial_id)
    assert heartbeats(quiet) == 1


@pytest.mark.parametrize("kind", DATABASES)
def test_a_record_already_on_a_running_trial_does_not_stop_its_tell(kind, tmp_path):
    """A sweep that took the worker for dead wrote its record, then died before failing it."""
    study = _worker_study(kind, tmp_path)
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    RDBStorage.set_trial_user_attr(_rdb(study), trial._trial_id, RECORD_ATTR, {"fail_reason": "gone"})
    study._storage.writes.hold_attr(
        study._storage, trial._trial_id, RECORD_ATTR, {"results": {"val_loss": 0.5}}
    )
    study.tell(trial, 0.5)
    stored = study._storage.get_trial(trial._trial_id)
    assert stored.state == TrialState.COMPLETE and stored.user_attrs[RECORD_ATTR] == {
        "results": {"val_loss": 0.5}
    }


class _Quick(BaseObjective):
    def train(self, trial: optuna.trial.BaseTrial, conf: dict) -> dict:  # type: ignore[type-arg]
        return {"val_loss": (conf["optimizer"]["learning_rate"] - 0.3) ** 2}


def test_a_worker_fails_a_trial_whose_heartbeat_stopped(tmp_path):
    """A worker on another host, outside any scheduler: its owner file cannot say whether it
    lives, its heartbeat can."""
    hyper = hyper_config(tmp_path / "results", tmp_path / "unused.py", n_trials=3)
    del hyper["optuna"]["objective"]
    hyper["optuna"]["storage"] = f"sqlite:///{tmp_path / 'study.db'}"
    cfg = read_config(hyper, dict(MODEL), objective=_Quick)
    study = open_study(cfg, 1)
    lost = study.ask()
    lost.suggest_float("lr", 0.0, 1.0)
    RunningTrials.of(cfg.paths).mark(lost.number, {"host": "a-node-elsewhere", "pid": 1})
    hour_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    with sqlite3.connect(tmp_path / "study.db") as db:
        db.execute(
            "INSERT INTO trial_heartbeats (trial_id, heartbeat) VALUES (?, ?)",
            (lost._trial_id, hour_ago.replace(tzinfo=None).isoformat(sep=" ")),
        )
    ran: list[int] = []
    worker = threading.Thread(
        target=lambda: ran.append(Worker(cfg, objective_class=_Quick).run()), daemon=True
    )
    worker.start()
    worker.join(timeout=120)  # without the heartbeat's verdict it waits on the lost trial for good
    assert ran == [3]
    trials = optuna.load_study(study_name=cfg.study_name, storage=hyper["optuna"]["storage"]).trials
    assert trials[lost.number].state == TrialState.FAIL
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3


class _ReportsIntoAnOutage(BaseObjective):
    def train(self, trial: optuna.trial.BaseTrial, conf: dict) -> dict:  # type: ignore[type-arg]
        # What trial.report raises when the storage stays away past optuna.storage_wait_s.
        raise StorageUnavailable("the storage did not answer for 8 s (optuna.storage_wait_s)")


def test_an_outage_met_inside_the_objective_stops_the_worker_and_leaves_the_trial_running(tmp_path):
    """The storage failed, not the trial: failing the trial would spend a place of n_trials on
    it, and the worker would go on into the outage."""
    hyper = hyper_config(tmp_path / "results", tmp_path / "unused.py", n_trials=3)
    del hyper["optuna"]["objective"]
    hyper["optuna"]["storage"] = f"sqlite:///{tmp_path / 'study.db'}"
    cfg = read_config(hyper, dict(MODEL), objective=_ReportsIntoAnOutage)
    open_study(cfg, 1)
    with pytest.raises(StorageUnavailable):
        Worker(cfg, objective_class=_ReportsIntoAnOutage, max_trials=1).run()
    trials = optuna.load_study(study_name=cfg.study_name, storage=hyper["optuna"]["storage"]).trials
    assert [t.state for t in trials] == [TrialState.RUNNING]  # recovered by a reload or a sweep
    assert not cfg.csv_path.exists() or len(cfg.csv_path.read_text().splitlines()) <= 1


class _StoredThenLost(InMemoryStorage):
    """Stores the first tell, then fails as a connection dropped before the answer would."""

    def __init__(self) -> None:
        super().__init__()
        self.tells = 0

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        self.tells += 1
        stored = super().set_trial_state_values(trial_id, state, values)
        if self.tells == 1:
            raise StorageInternalError("connection lost")
        return stored


def test_a_tell_stored_before_its_outage_is_not_told_twice():
    backend = _StoredThenLost()
    storage = ResilientStorage(backend, limit_s=60, where="test")
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    study.tell(trial, 0.5)  # the retry finds the trial finished: told, no error
    assert backend.tells == 2
    assert study.trials[0].state == TrialState.COMPLETE and study.trials[0].value == 0.5

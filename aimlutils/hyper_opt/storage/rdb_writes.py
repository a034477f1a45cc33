"""A worker's RDB storage: as many commits per trial as plain Optuna, and cheap reads."""

from __future__ import annotations

import datetime
import functools
import json
import threading
import types
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import optuna
from optuna.exceptions import StorageInternalError
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

from aimlutils.hyper_opt import _optuna
from aimlutils.hyper_opt.storage.resilient import ResilientStorage
from aimlutils.hyper_opt.storage.trial_writes import TrialWrites

if TYPE_CHECKING:
    import sqlalchemy


@functools.cache
def _statements() -> types.SimpleNamespace:
    """The worker's own statements, as SQLAlchemy Core: built once, compiled once per dialect.

    Optuna's ORM session costs several hundred Python calls a statement, as much as a SQLite
    commit on a quick disk; a Core statement on a pooled connection costs about a quarter.
    """
    import sqlalchemy as sa

    tables = _optuna.rdb_tables()
    trials = tables.trials
    return types.SimpleNamespace(
        trial_id=sa.select(trials.c.trial_id).where(
            trials.c.study_id == sa.bindparam("study_id"), trials.c.number == sa.bindparam("number")
        ),
        completed=sa.select(trials.c.datetime_complete).where(trials.c.trial_id == sa.bindparam("trial_id")),
        # The heartbeat column's default is the database's clock, as in Optuna's own insert.
        heartbeat=sa.insert(tables.heartbeats),
        attr=sa.insert(tables.user_attrs),
    )


class WorkerRDBStorage(RDBStorage):
    """The RDB storage a worker opens: as many commits per trial as plain Optuna, and cheap reads.

    Each commit costs a round trip, and on SQLite an fsync. Two writes of a worker's own ride
    with others:

    - A trial's record, held by :meth:`hold_attr`, is stored in the transaction of the trial's
      tell. A worker that dies in between loses the record with the tell, and the trial is
      recovered as any that was RUNNING.
    - A trial's first heartbeat (Optuna's heartbeat thread writes one as the trial starts) is
      stored with the trial's next write: a parameter, a reported value, an attribute. Later
      heartbeats, a minute apart, are written as they come, and so is the first one when no
      other write comes before the second. A trial told before anything carried its first
      heartbeat (a trial of milliseconds) never writes one: a dead worker is recognised by a
      heartbeat older than the grace period, and such a trial is found by its owner file
      (:mod:`aimlutils.hyper_opt.coordination.recovery`), as on a journal file.

    Those writes, the budget's lookup of a trial by number (before every claim) and the end time
    of a told trial are single SQLAlchemy Core statements (:func:`_statements`), not ORM ones.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held: dict[int, tuple[str, Any]] = {}
        #: Trials whose first heartbeat is waiting for a write to ride with; trials that had one.
        self._beat_waiting: set[int] = set()
        self._beaten: set[int] = set()
        # Held while a write carries a heartbeat, so the heartbeat thread never writes a trial's
        # heartbeat at the same time (two first heartbeats would break a unique key).
        self._beat_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_beat_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._beat_lock = threading.Lock()

    def record_heartbeat(self, trial_id: int) -> None:
        with self._beat_lock:
            if trial_id not in self._beaten:
                self._beaten.add(trial_id)
                self._beat_waiting.add(trial_id)
                return
            self._beat_waiting.discard(trial_id)
            super().record_heartbeat(trial_id)

    def _carrying_heartbeat(self, trial_id: int, write: Callable[[], None]) -> None:
        """``write()``, with the trial's first heartbeat in its transaction when one is waiting."""
        if trial_id not in self._beat_waiting:  # a set lookup: no lock on a trial's usual writes
            write()
            return
        with self._beat_lock:
            if trial_id not in self._beat_waiting:
                write()
                return
            self._beat_waiting.discard(trial_id)
            # Inserted in the transaction of this thread's session, which ``write`` takes up and
            # commits. Should either fail, the heartbeat thread's next beat finds no row and adds it.
            self._in_next_commit(_statements().heartbeat, {"trial_id": trial_id})
            self._then_commit(write)

    def _in_next_commit(self, statement: sqlalchemy.Executable, params: dict[str, Any]) -> None:
        """Run ``statement`` in the transaction of this thread's session, left open for Optuna's
        next write of the thread to commit (or roll back) with its own changes."""
        session = self.scoped_session()
        try:
            session.connection().execute(statement, params)
        except BaseException:
            session.rollback()
            session.close()
            raise

    def _then_commit(self, write: Callable[[], Any]) -> Any:
        """``write()``, which commits this thread's session; rolled back should it fail before."""
        try:
            return write()
        except BaseException:
            self.scoped_session().rollback()  # a no-op once Optuna's own session has ended
            raise

    def _set_trial_param(self, trial_id: int, *args: Any, **kwargs: Any) -> None:
        self._carrying_heartbeat(
            trial_id, functools.partial(super()._set_trial_param, trial_id, *args, **kwargs)
        )

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        write = functools.partial(super().set_trial_intermediate_value, trial_id, step, intermediate_value)
        self._carrying_heartbeat(trial_id, write)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._carrying_heartbeat(
            trial_id, functools.partial(super().set_trial_system_attr, trial_id, key, value)
        )

    def hold_attr(self, trial_id: int, key: str, value: Any) -> None:
        """Store ``key: value`` on the trial in the transaction of its finishing write."""
        self._held[trial_id] = (key, value)

    def drop_held(self, trial_id: int) -> None:
        self._held.pop(trial_id, None)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._carrying_heartbeat(
            trial_id, functools.partial(super().set_trial_user_attr, trial_id, key, value)
        )

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        if state.is_finished():  # a heartbeat still waiting is of no use to a finished trial
            with self._beat_lock:
                self._beat_waiting.discard(trial_id)
                self._beaten.discard(trial_id)
        held = self._held.get(trial_id)
        if held is None or not state.is_finished():
            return super().set_trial_state_values(trial_id, state, values)
        key, value = held
        # Here, not at the top: it loads SQLAlchemy, which a journal-file study never needs.
        import sqlalchemy.exc

        # Inserted in the transaction the tell below commits (or rolls back) with its own
        # changes. An insert, not Optuna's upsert (a read of the trial and a statement built
        # anew, a millisecond on SQLite): a trial's record is written once, by the worker that
        # runs it, as the trial ends; the tell checks that it has not ended.
        row = {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
        try:
            self._in_next_commit(_statements().attr, row)
        except sqlalchemy.exc.IntegrityError:
            told = False
        else:
            told = self._then_commit(
                functools.partial(super().set_trial_state_values, trial_id, state, values)
            )
        if not told:
            # Refused for a duplicate key: a record was there already (a sweep that took this
            # worker for dead wrote one, and died before failing the trial). Told again with
            # Optuna's upsert, which replaces it.
            session = self.scoped_session()
            try:
                _optuna.set_user_attr_without_commit(self, session, trial_id, key, value)
            except BaseException:
                session.rollback()
                session.close()
                raise
            told = super().set_trial_state_values(trial_id, state, values)
        # Kept until written: a tell that fails (an outage) is tried again with the record in it.
        self._held.pop(trial_id, None)
        return told

    def _read_one(self, statement: sqlalchemy.Executable, params: dict[str, Any]) -> Any:
        """The first row ``statement`` reads, or ``None``; errors as Optuna's own reads give them."""
        import sqlalchemy.exc

        try:
            with self.engine.connect() as connection:
                return connection.execute(statement, params).first()
        except sqlalchemy.exc.SQLAlchemyError as err:
            raise StorageInternalError(f"a read of the study failed: {err}") from err

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        row = self._read_one(_statements().trial_id, {"study_id": study_id, "number": trial_number})
        if row is None:
            raise KeyError(
                f"No trial with trial number {trial_number} exists in study with study_id {study_id}."
            )
        return int(row[0])

    def completed_at(self, trial_id: int) -> datetime.datetime | None:
        """When the trial ended, as :meth:`get_trial` gives it, in one query (it makes six)."""
        row = self._read_one(_statements().completed, {"trial_id": trial_id})
        if row is None:
            raise KeyError(f"No trial with trial_id {trial_id} exists.")
        completed: datetime.datetime | None = row[0]
        return completed


class RDBTrialWrites(TrialWrites):
    """A trial's record rides in its tell's transaction; the told trial is the worker's own copy
    with the end time the tell stored, one query (a read of the trial is six)."""

    def __init__(self, rdb: WorkerRDBStorage) -> None:
        self.rdb = rdb

    def hold_attr(self, storage: BaseStorage, trial_id: int, key: str, value: Any) -> None:
        self.rdb.hold_attr(trial_id, key, value)

    def drop(self, trial_id: int) -> None:
        self.rdb.drop_held(trial_id)

    def told(
        self, storage: BaseStorage, trial: optuna.Trial, state: TrialState, values: Sequence[float] | None
    ) -> FrozenTrial:
        trial_id = _optuna.trial_id(trial)
        if isinstance(storage, ResilientStorage):  # waits out an outage, as the storage's own calls do
            completed = storage.call(self.rdb.completed_at, trial_id)
        else:
            completed = self.rdb.completed_at(trial_id)
        if completed is None:  # not stored as ended after all: the trial as it is
            return storage.get_trial(trial_id)
        mine = _optuna.frozen_copy(trial)
        return FrozenTrial(
            number=mine.number,
            state=state,
            value=None,
            values=values,
            datetime_start=mine.datetime_start,
            datetime_complete=completed,
            params=dict(mine.params),
            distributions=dict(mine.distributions),
            user_attrs=dict(mine.user_attrs),
            system_attrs=dict(mine.system_attrs),
            intermediate_values=dict(mine.intermediate_values),
            trial_id=trial_id,
        )

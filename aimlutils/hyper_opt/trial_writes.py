"""A trial's writes of the worker's own, riding with the writes Optuna makes anyway.

Each write of a trial costs a commit: on a journal file a lock and an fsync, on a database a round
trip (and on SQLite an fsync). A worker adds a record to each trial, and on a database Optuna's
heartbeat adds one more; held back until the next write of the trial, they cost a worker no
commit that plain ``study.optimize`` does not make.
"""

from __future__ import annotations

import datetime
import functools
import json
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages.journal import BaseJournalBackend
from optuna.storages.journal._storage import JournalOperation
from optuna.trial import FrozenTrial, TrialState

from aimlutils.hyper_opt.coordination.records import RECORD_ATTR
from aimlutils.hyper_opt.resilient import ResilientStorage, with_retries


class RecordWithNextWrite(BaseJournalBackend):
    """A journal backend that writes a trial's record together with the operation after it.

    Each journal-file write takes a lock and an fsync. The worker stores a finished trial's record
    right before Optuna's ``tell``; holding the record back until that next write makes the two one
    append, so a trial costs the same number of writes as in plain Optuna. Nobody reads a trial's
    record before its ``tell``; a worker that dies in between loses the record with the ``tell``.
    """

    def __init__(self, backend: BaseJournalBackend) -> None:
        self._backend = backend
        self._held: list[dict[str, Any]] = []

    def read_logs(self, log_number_from: int) -> Iterable[dict[str, Any]]:
        return self._backend.read_logs(log_number_from)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        if (
            len(logs) == 1
            and logs[0].get("op_code") == JournalOperation.SET_TRIAL_USER_ATTR
            and RECORD_ATTR in logs[0].get("user_attr", {})
        ):
            self._held.extend(logs)
            return
        # Cleared only once written: a write that fails (a file server hiccup) is tried again
        # with the record still in it.
        self._backend.append_logs(self._held + logs)
        self._held = []


class RecordWithTell(RDBStorage):
    """An RDB storage whose worker commits a trial as often as plain Optuna does.

    Each commit costs a round trip, and on SQLite an fsync. Two writes of a worker's own ride
    with others:

    - A trial's record is stored in the transaction of the trial's tell. A worker that dies in
      between loses the record with the tell, and the trial is recovered as any that was RUNNING.
    - A trial's first heartbeat (Optuna's heartbeat thread writes one as the trial starts) is
      stored with the trial's next write: a parameter, a reported value, an attribute. Later
      heartbeats, a minute apart, are written as they come, and so is the first one when no
      other write comes before the second. A trial told before anything carried its first
      heartbeat (a trial of milliseconds) never writes one: a dead worker is recognised by a
      heartbeat older than the grace period, and such a trial is found by its owner file
      (:mod:`aimlutils.hyper_opt.coordination.recovery`), as on a journal file.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held: dict[int, Any] = {}
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
        from optuna.storages._rdb import models

        with self._beat_lock:
            if trial_id not in self._beat_waiting:
                write()
                return
            self._beat_waiting.discard(trial_id)
            # Staged in this thread's session, which ``write`` takes up and commits. Should the
            # write fail, the heartbeat thread's next beat finds no row and adds it.
            session, beat = self.scoped_session(), models.TrialHeartbeatModel(trial_id=trial_id)
            session.add(beat)
            try:
                write()
            except BaseException:
                if beat in session:  # the write failed before its transaction: not left for the next
                    session.expunge(beat)
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

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        if key == RECORD_ATTR:
            self._held[trial_id] = value
            return
        self._carrying_heartbeat(
            trial_id, functools.partial(super().set_trial_user_attr, trial_id, key, value)
        )

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        if state.is_finished():  # a heartbeat still waiting is of no use to a finished trial
            with self._beat_lock:
                self._beat_waiting.discard(trial_id)
                self._beaten.discard(trial_id)
        record = self._held.get(trial_id)
        if record is None or not state.is_finished():
            return super().set_trial_state_values(trial_id, state, values)
        # Here, not at the top: the models load SQLAlchemy, which a journal-file study never needs.
        from optuna.storages._rdb import models

        # Staged in this thread's session, which the tell below takes up and commits (or rolls
        # back) with its own changes. An insert, not Optuna's upsert (a read of the trial and a
        # statement built anew, a millisecond on SQLite): a trial's record is written once, by
        # the worker that runs it, as the trial ends; the tell checks that it has not ended.
        session = self.scoped_session()
        record_row = models.TrialUserAttributeModel(
            trial_id=trial_id, key=RECORD_ATTR, value_json=json.dumps(record)
        )
        session.add(record_row)
        try:
            told = super().set_trial_state_values(trial_id, state, values)
        except BaseException:
            if record_row in session:  # not left for the thread's next write
                session.expunge(record_row)
            raise
        if not told:
            # Refused for a duplicate key, all of it: a record was there already (a sweep that
            # took this worker for dead wrote one, and died before failing the trial). Told
            # again with Optuna's upsert, which replaces it.
            session = self.scoped_session()
            try:
                self._set_trial_attr_without_commit(
                    session, models.TrialUserAttributeModel, trial_id, RECORD_ATTR, record
                )
            except BaseException:
                session.rollback()
                session.close()
                raise
            told = super().set_trial_state_values(trial_id, state, values)
        # Kept until written: a tell that fails (an outage) is tried again with the record in it.
        self._held.pop(trial_id, None)
        return told

    def completed_at(self, trial_id: int) -> datetime.datetime | None:
        """When the trial ended, as :meth:`get_trial` gives it, in one query (it makes six)."""
        from optuna.storages._rdb import models

        session = self.scoped_session()
        try:
            return models.TrialModel.find_or_raise_by_id(trial_id, session).datetime_complete
        finally:
            session.close()


def told_trial(
    storage: BaseStorage, trial: optuna.Trial, state: TrialState, values: Sequence[float] | None
) -> FrozenTrial:
    """``trial`` as ``storage`` holds it once told ``state`` and ``values`` (for its CSV row).

    A journal holds the study in memory, so this is a lookup. An RDB storage would read the trial
    and its five tables of attributes again; there it is the worker's own copy (Optuna's, kept up
    to date by suggest, report and set_user_attr) with the end time the tell stored, one query.
    """
    resilient_layer = storage if isinstance(storage, ResilientStorage) else None
    inner = resilient_layer.backend if resilient_layer is not None else storage
    inner = getattr(inner, "_backend", inner)  # under Optuna's cache
    if not isinstance(inner, RecordWithTell):
        return storage.get_trial(trial._trial_id)
    rdb = inner
    if resilient_layer is None:
        completed = rdb.completed_at(trial._trial_id)
    else:
        completed = with_retries(
            lambda _: rdb.completed_at(trial._trial_id), resilient_layer.limit_s, resilient_layer.where
        )
    if completed is None:  # not stored as ended after all: the trial as it is
        return storage.get_trial(trial._trial_id)
    mine = trial._cached_frozen_trial
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
        trial_id=mine._trial_id,
    )

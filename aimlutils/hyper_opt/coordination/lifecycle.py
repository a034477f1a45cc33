"""A trial's life in the shared study, owned in one place: claim, start (its chain's reports
first), finish, fail, and give back for a retry.

The worker goes through every verb; recovery (a dead worker's trial, found by another worker,
``optimize.py``, ``status`` or ``cancel``) through :meth:`TrialLife.fail_dead`. Each trial ends in
one write that carries its record (:mod:`aimlutils.hyper_opt.storage.trial_writes`), its row in
``trial_results.csv`` and the removal of its owner file.

A trial that someone else ended first (recovery took its worker for dead, a user failed it by
hand) is a normal outcome, not an error: the worker logs one line, writes its result to the CSV
as ``FINISHED_ELSEWHERE`` (the study keeps the other end) and goes on with its next trial.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from aimlutils.hyper_opt import _optuna
from aimlutils.hyper_opt.coordination.budget import Room, TrialBudget
from aimlutils.hyper_opt.coordination.claim import claim_trial
from aimlutils.hyper_opt.coordination.failures import BY_OBJECTIVE, StudyStop, verdict
from aimlutils.hyper_opt.coordination.nodes import BadNodes
from aimlutils.hyper_opt.coordination.owners import RunningTrials
from aimlutils.hyper_opt.coordination.records import RECORD_ATTR, make_record, read_record
from aimlutils.hyper_opt.coordination.results_csv import ResultsCsv, trial_row
from aimlutils.hyper_opt.coordination.retries import chain, continue_trial, requeue
from aimlutils.hyper_opt.paths import StudyPaths
from aimlutils.hyper_opt.storage import ResilientStorage, TrialWrites
from aimlutils.hyper_opt.storage.locks import FileLock

logger = logging.getLogger(__name__)

#: The CSV state of a trial this worker ran to the end after someone else had ended it.
FINISHED_ELSEWHERE = "FINISHED_ELSEWHERE"
#: More entries of one refused end than a journal can hold (a record and a tell: two).
_REFUSED_ENTRIES_MAX = 8


class TrialLife:
    """The verbs of a trial's life in ``study``, for one worker (``identity``) or for recovery.

    ``csv`` receives a row for each trial ended here; ``max_retries`` bounds how often a trial
    that makes no progress is given back. ``lock_finish``: finish under the claim lock, so no
    worker checks the budget between a value being stored and being counted (``optuna.target``).
    ``max_failures``: the failure budget (:mod:`~.failures`); ``log``: where this process's
    tracebacks go, named when the study stops. ``bad_nodes``: the study's marked nodes
    (:mod:`~.nodes`), whose failures the budget leaves out and whose trials are queued again.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from aimlutils.hyper_opt.storage import open_storage, parse_storage
        >>> paths = StudyPaths(Path(tempfile.mkdtemp()))
        >>> storage = open_storage(parse_storage(None, None, paths.root, paths.root))
        >>> study = optuna.create_study(storage=storage)
        >>> life = TrialLife(study, storage, paths, ResultsCsv(paths.results_csv), {"worker": 0})
        >>> trial = life.claim(TrialBudget(study, storage, n_trials=1))
        >>> life.finish(trial, 0.5, record=make_record(results={"loss": 0.5})).state.name
        'COMPLETE'
        >>> life.claim(TrialBudget(study, storage, n_trials=1))
        <Room.DONE: 'done'>
    """

    def __init__(
        self,
        study: optuna.Study,
        storage: BaseStorage,
        paths: StudyPaths,
        csv: ResultsCsv,
        identity: dict[str, Any] | None = None,
        max_retries: int = 1,
        lock_finish: bool = False,
        max_failures: int | None = None,
        log: str | None = None,
        bad_nodes: BadNodes | None = None,
    ) -> None:
        self.study, self.storage, self.paths, self.csv = study, storage, paths, csv
        self.identity = identity or {}
        self.max_retries, self.max_failures, self.lock_finish = max_retries, max_failures, lock_finish
        self.log, self.bad_nodes = log, bad_nodes
        #: Why the study stopped (its failure budget spent), once this process knows.
        self.stop: StudyStop | None = None
        self.claim_lock = FileLock(paths.claim_lock)
        self.owners = RunningTrials.of(paths)
        self.writes = storage.writes if isinstance(storage, ResilientStorage) else TrialWrites()
        self._study_id = storage.get_study_id_from_name(study.study_name)

    # -- claim and run -------------------------------------------------------------------------

    def claim(self, budget: TrialBudget) -> optuna.Trial | Room | None:
        """A new trial of this worker's, a :class:`Room` that says why not, or ``None`` to try
        again (another worker took the last place first; this trial was given back unrun)."""
        claimed = claim_trial(self.study, budget, self.claim_lock, self.owners, self.identity)
        if isinstance(claimed, optuna.Trial) and not budget.admits(claimed.number):
            self.return_unrun(claimed)
            return None
        return claimed

    @contextlib.contextmanager
    def start(self, trial: optuna.Trial) -> Iterator[int]:
        """Run the trial's body inside: Optuna's heartbeat beats (on a database), and the values
        of the trials it continues are reported first. Gives how many were reported."""
        with _optuna.get_heartbeat_thread(_optuna.trial_id(trial), self.storage):
            yield continue_trial(self.study, trial)

    def reported(self, trial: optuna.Trial) -> dict[int, float]:
        """The trial's intermediate values as the storage holds them."""
        return dict(self.storage.get_trial(_optuna.trial_id(trial)).intermediate_values)

    # -- ends ------------------------------------------------------------------------------------

    def finish(
        self,
        trial: optuna.Trial,
        values: float | Sequence[float] | None = None,
        state: TrialState | None = None,
        record: dict[str, Any] | None = None,
    ) -> FrozenTrial | None:
        """Tell the trial's end, its ``record`` riding in the same write; record its CSV row.

        Returns the trial as told, or ``None`` when someone else had ended it (then the CSV row
        says :data:`FINISHED_ELSEWHERE`).
        """
        record = record if record is not None else make_record(worker=self.identity)
        with self.claim_lock if self.lock_finish else contextlib.nullcontext():
            told = self._tell(trial, values, state, record)
        if told is None:
            self._ended_elsewhere(trial, state or TrialState.COMPLETE, _as_list(values), record)
            return None
        told.user_attrs[RECORD_ATTR] = record
        self._close(told)
        return told

    def fail(
        self, trial: optuna.Trial, reason: str, by_objective: bool = False, **record: Any
    ) -> FrozenTrial | None:
        """End the trial FAIL, saying why (``record``: more fields for it, such as ``repro``).

        ``by_objective``: the objective's own error failed it, which counts toward the failure
        budget; past the budget the study stops (:meth:`stopped` then says why). On a node marked
        bad it counts not, and its parameters are queued again, for another node.
        """
        marked = self.bad_nodes.names() if self.bad_nodes is not None else []
        if by_objective and self.identity.get("node") in marked:
            self.requeue(trial)
        blame = BY_OBJECTIVE if by_objective else None
        fields = make_record(worker=self.identity, fail_reason=reason, failed_by=blame, **record)
        told = self.finish(trial, state=TrialState.FAIL, record=fields)
        if by_objective and self.stop is None:
            self.stop = verdict(self.study, self.max_failures, self.log, marked)
            if self.stop is not None and not self.paths.stopped.exists():
                self.stop.write(self.paths.stopped)
                logger.error("%s", self.stop.message())
        return told

    def stopped(self) -> StudyStop | None:
        """Why the study stopped before ``n_trials``, or ``None`` while it goes on: as this
        process found it, or as another wrote it (a file's existence asked; read once there)."""
        if self.stop is None and self.paths.stopped.exists():
            self.stop = StudyStop.read(self.paths.stopped)
        return self.stop

    def give_back(self, trial: optuna.Trial, reason: str, **record: Any) -> FrozenTrial | None:
        """Fail an interrupted trial and queue its parameters again: the trial that runs them
        continues it (same checkpoint, same learning curve). Queued first, since the scheduler may
        SIGKILL this process any moment, and failing frees a place another trial would take.

        A chain interrupted ``max_failures`` times without finishing (a trial that reports a new
        step before every time limit, and never ends) is not queued again: it counts as a failure
        of the objective's, as the failure budget counts them.
        """
        interrupted = len(chain(self.study, trial)) + 1
        if self.max_failures is not None and interrupted >= self.max_failures:
            why = f"{reason}; interrupted {interrupted} times without finishing (optuna.max_failures)"
            return self.fail(trial, why, by_objective=True, **record)
        self.requeue(trial)
        return self.fail(trial, reason, **record)

    def return_unrun(self, trial: optuna.Trial) -> None:
        """Fail a trial that never ran (it did not fit the budget) and queue its fixed parameters
        again when they were queued ones (``enqueue`` in hyper.yml, a retry)."""
        stored = self.storage.get_trial(_optuna.trial_id(trial))
        fixed = stored.system_attrs.get("fixed_params")
        if fixed:
            self.study.enqueue_trial(fixed, user_attrs=dict(trial.user_attrs))
        self.fail(trial, "not run: another worker took the last place in n_trials")

    def requeue(self, trial: FrozenTrial | optuna.Trial) -> bool:
        """Queue ``trial``'s parameters for a retry, once: under the claim lock, so two recoveries
        of one trial at once see each other's retry (:func:`~.retries.requeue` checks)."""
        with self.claim_lock:
            return requeue(self.study, trial, self.max_retries)

    def fail_dead(self, trial: FrozenTrial, owner: dict[str, Any], reason: str) -> bool:
        """Fail a RUNNING trial whose worker is gone, and queue its parameters again.

        Returns whether this call failed it: it may have ended meanwhile, or another recovery
        failed it first.
        """
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self._study_id, trial.number)
        # ``trial`` was read when the sweep began; a long sweep finds trials whose worker finished
        # them since. A record written to a finished trial fails.
        if self.storage.get_trial(trial_id).state != TrialState.RUNNING:
            return False
        try:
            self.storage.set_trial_user_attr(
                trial_id, RECORD_ATTR, make_record(worker=owner, fail_reason=reason)
            )
            self.requeue(trial)
            _optuna.tell(self.study, trial.number, None, TrialState.FAIL)
        except (ValueError, UpdateFinishedTrialError):  # it has ended since, or was failed first
            return False
        self._close(self.storage.get_trial(trial_id))
        logger.warning("trial %d failed: %s", trial.number, reason)
        return True

    # -- inside ----------------------------------------------------------------------------------

    def _tell(
        self,
        trial: optuna.Trial,
        values: float | Sequence[float] | None,
        state: TrialState | None,
        record: dict[str, Any],
    ) -> FrozenTrial | None:
        """The told trial, or ``None`` when it had ended elsewhere."""
        trial_id = _optuna.trial_id(trial)
        try:
            self.writes.hold_attr(self.storage, trial_id, RECORD_ATTR, record)
            told_state, told_values = _optuna.tell(self.study, trial, values, state)
        except (ValueError, UpdateFinishedTrialError):
            self.writes.drop(trial_id)
            if not self._stored(trial_id).state.is_finished():
                raise  # a value the study refuses, not an end elsewhere
            return None
        return self.writes.told(self.storage, trial, told_state, told_values)

    def _stored(self, trial_id: int) -> FrozenTrial:
        """The trial as stored, once the storage has taken in every refused write of ours.

        A journal replays its entries in order and refuses, one by one, each of this worker's that
        would change a trial ended elsewhere (the record, then the tell): each refusal is raised at
        the read that replays it, so the reads go on until one passes.
        """
        for _ in range(_REFUSED_ENTRIES_MAX):
            try:
                return self.storage.get_trial(trial_id)
            except UpdateFinishedTrialError:
                continue
        return self.storage.get_trial(trial_id)

    def _ended_elsewhere(
        self, trial: optuna.Trial, mine: TrialState, values: list[float] | None, record: dict[str, Any]
    ) -> None:
        """Log it, and write this worker's result to the CSV (the study keeps the other end)."""
        stored = self._stored(_optuna.trial_id(trial))
        why = read_record(stored).get("fail_reason")
        logger.warning(
            "trial %d ended elsewhere (%s%s) before this worker finished it %s; its result goes to the "
            "CSV only",
            trial.number,
            stored.state.name,
            f": {why}" if why else "",
            mine.name,
        )
        copy = _optuna.frozen_copy(trial)
        note = f"finished elsewhere: the study has it {stored.state.name}" + (f" ({why})" if why else "")
        row_trial = FrozenTrial(
            number=copy.number,
            state=mine,
            value=None,
            values=values,
            datetime_start=copy.datetime_start,
            datetime_complete=datetime.datetime.now(),
            params=dict(copy.params),
            distributions=dict(copy.distributions),
            user_attrs={**copy.user_attrs, RECORD_ATTR: {**record, "fail_reason": note}},
            system_attrs={},
            intermediate_values=dict(copy.intermediate_values),
            trial_id=_optuna.trial_id(trial),
        )
        self._close(row_trial, state_name=FINISHED_ELSEWHERE)

    def _close(self, trial: FrozenTrial, state_name: str | None = None) -> None:
        """The trial's owner file removed and its CSV row written."""
        self.owners.clear(trial.number)
        row = trial_row(trial)
        if state_name is not None:
            row["state"] = state_name
        try:
            self.csv.append(row)
        except OSError as err:  # a full disk, a quota: the study has the trial all the same
            logger.error(
                "could not write trial %d to %s (%s); the study has it: --export-csv rebuilds the file",
                trial.number,
                self.csv.path,
                err.strerror or err,
            )
        logger.info(
            "trial %d %s value=%s params=%s", trial.number, row["state"], row.get("value"), trial.params
        )


def _as_list(values: float | Sequence[float] | None) -> list[float] | None:
    return None if values is None else [values] if isinstance(values, (int, float)) else list(values)

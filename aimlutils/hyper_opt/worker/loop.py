"""A worker: runs trials of the shared study until its ``n_trials`` budget is spent.

Launchers start one worker per GPU (or per CPU slot); each runs ``aimlutils-worker`` on the copies
of ``hyper.yml`` and ``model.yml`` saved in ``save_path``.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import random
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages._heartbeat import get_heartbeat_thread, is_heartbeat_enabled
from optuna.study._tell import _tell_with_warning
from optuna.trial import FrozenTrial, TrialState

from aimlutils.hyper_opt.config import RunConfig
from aimlutils.hyper_opt.coordination import (
    FileLock,
    ResultsCsv,
    Room,
    RunningTrials,
    StudyTurn,
    TrialBudget,
    claim_trial,
    continue_trial,
    requeue,
    sweep_dead_trials,
    trial_row,
    write_record,
)
from aimlutils.hyper_opt.coordination import study as study_lib
from aimlutils.hyper_opt.objective.base import BaseObjective
from aimlutils.hyper_opt.objective.reproduce import TrialRecorder
from aimlutils.hyper_opt.stop import StopSignal, TrialInterrupted
from aimlutils.hyper_opt.storage.resilient import StorageUnavailable
from aimlutils.hyper_opt.storage.trial_writes import told_trial
from aimlutils.hyper_opt.worker.setup import (
    build_worker_objective,
    liveness_for,
    worker_identity,
    worker_storage,
)

# Named, not __name__: run with -m, this module is __main__, outside the package's logger.
logger = logging.getLogger("aimlutils.hyper_opt.worker")

#: How often a worker looks for trials of dead workers while the study runs.
SWEEP_INTERVAL_S = 60.0
#: While running trials fill the budget, dead workers' trials are looked for this often.
WAITING_SWEEP_INTERVAL_S = 5.0
#: While the budget is full, a worker asks again after ``poll_s``, twice that, ... up to this.
#: A thousand waiting workers then ask the storage a few hundred times a second, not a thousand,
#: and a study's last trial is still seen to end within seconds by every worker waiting on it.
WAITING_POLL_MAX_S = 5.0


class Worker:
    """Runs trials one after another until the study's ``n_trials`` are done.

    Each trial is claimed (budget check, ask, owner file) under the study's claim lock
    (:func:`~aimlutils.hyper_opt.coordination.claim_trial`), run, and told. ``max_trials`` stops
    this worker sooner; ``reraise`` lets an objective's exception out once its trial is failed
    (for a debugger).
    """

    def __init__(
        self,
        cfg: RunConfig,
        index: int = 0,
        n_workers: int = 1,
        poll_s: float = 1.0,
        objective_class: type[BaseObjective] | None = None,
        max_trials: int | None = None,
        reraise: bool = False,
    ) -> None:
        self.cfg = cfg
        self.storage = worker_storage(cfg, index)
        self.study = study_lib.load(cfg, self.storage, n_workers, index)
        self._study_id = self.storage.get_study_id_from_name(self.study.study_name)
        self.budget = TrialBudget(self.study, self.storage, cfg.optuna.n_trials, cfg.optuna.target)
        self.claim_lock = FileLock(cfg.paths.claim_lock)
        self.owners = RunningTrials.of(cfg.paths)
        self.csv = ResultsCsv(cfg.csv_path)
        self.poll_s = poll_s
        self.max_trials = max_trials
        self.reraise = reraise
        self.identity = worker_identity(index)
        self.liveness = liveness_for(cfg, os.environ, self.identity)
        self.sweep_turn = StudyTurn(cfg.paths.sweep_turn)
        self.job_end = job_end(os.environ.get("AIMLUTILS_JOB_END"))
        self._durations: list[float] = []
        #: Whether this worker finished a trial, or took an interrupted one a step further.
        self.progressed = False
        #: Whether it stopped because a trial would not finish before its job's end.
        self.out_of_time = False
        self.objective = build_worker_objective(cfg, self.study, self.identity, objective_class)
        # After the objective: its import may have loaded torch, which can name the GPUs.
        self.recorder = TrialRecorder(cfg, index, n_workers, objective_class)
        self.objective.recorder = self.recorder

    def run(self) -> int:
        """Run trials until the budget is spent (or ``max_trials``); returns how many this worker ran."""
        ran, waited = 0, 0
        try:
            while not self._should_stop(ran):
                claimed = self._claim()
                if claimed is Room.DONE:
                    break
                if claimed is Room.WAIT:  # running trials fill the budget; one may still fail
                    if self.sweep_turn.take(WAITING_SWEEP_INTERVAL_S):
                        self._sweep()
                    time.sleep(waiting_poll_s(self.poll_s, waited))
                    waited += 1
                    continue
                waited = 0
                if isinstance(claimed, optuna.Trial):
                    self._run_trial(claimed)
                    ran += 1
        finally:
            self.csv.close()
            self.recorder.close()
        return ran

    def _should_stop(self, ran: int) -> bool:
        self.out_of_time = self.out_of_time or self._out_of_time()
        stop = StopSignal.stopping() or self.out_of_time
        return stop or (self.max_trials is not None and ran >= self.max_trials)

    def _claim(self) -> optuna.Trial | Room | None:
        """A new trial of this worker's, a :class:`Room` that says why not, or ``None`` to try again."""
        if self.sweep_turn.take(SWEEP_INTERVAL_S):
            self._sweep()
        claimed = claim_trial(self.study, self.budget, self.claim_lock, self.owners, self.identity)
        if isinstance(claimed, optuna.Trial) and not self.budget.admits(claimed.number):
            self._give_back(claimed)
            return None
        return claimed

    def _give_back(self, trial: optuna.Trial) -> None:
        """Another worker took the last place first (the claim lock did not hold): fail this
        trial unrun, and queue its parameters again when they were queued ones."""
        user_attrs = trial.user_attrs
        fixed = self._fixed_params(trial.number)
        self._fail(trial, "not run: another worker took the last place in n_trials")
        if fixed:
            self.study.enqueue_trial(fixed, user_attrs=user_attrs)
        self._record(self.study.tell(trial, state=TrialState.FAIL))

    def _trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self._study_id, number)

    def _fixed_params(self, number: int) -> dict[str, Any] | None:
        return self.storage.get_trial(self._trial_id(number)).system_attrs.get("fixed_params")

    def _run_trial(self, trial: optuna.Trial) -> None:
        started, inherited = time.monotonic(), 0
        try:
            with self._heartbeat(trial), StopSignal.interruptible_section():
                inherited = continue_trial(self.study, trial)
                if inherited:
                    logger.info("trial %d continues trial %s", trial.number, trial.user_attrs["retry_of"])
                values = self.objective(trial)
        except optuna.TrialPruned:
            write_record(trial, worker=self.identity, repro=self.objective.repro_fields(trial))
            frozen = self._told(trial, state=TrialState.PRUNED)
        except KeyboardInterrupt as err:
            # Stopped, not wrong: its parameters get another run, which continues it. Queued
            # before the trial is failed, since the scheduler may SIGKILL this process any moment.
            how = str(err) if isinstance(err, TrialInterrupted) else "Ctrl-C or SIGTERM"
            reported = self.storage.get_trial(self._trial_id(trial.number)).intermediate_values
            self.progressed = self.progressed or len(reported) > inherited
            self._fail(trial, f"interrupted ({how})")
            requeue(self.study, trial, self.cfg.optuna.max_retries)
            self._record(self.study.tell(trial, state=TrialState.FAIL))
            raise
        except StorageUnavailable:
            # The storage, not the trial, failed (a report or a pruning check met an outage
            # longer than optuna.storage_wait_s): the worker stops, and the trial, still RUNNING,
            # is recovered by a reload or a live worker's sweep, and run again.
            raise
        except Exception as err:
            self._fail(trial, f"{type(err).__name__}: {err}")
            logger.error("trial %d failed:\n%s", trial.number, traceback.format_exc())
            self._record(self.study.tell(trial, state=TrialState.FAIL))
            if self.reraise:
                raise
            return
        else:
            frozen = self._tell(trial, values)
        self.progressed = True
        self._durations.append(time.monotonic() - started)
        self._record(frozen)

    @contextlib.contextmanager
    def _heartbeat(self, trial: optuna.Trial) -> Iterator[None]:
        """Optuna's own heartbeat thread for RDB storages, as ``study.optimize`` starts it."""
        with get_heartbeat_thread(trial._trial_id, self.storage):
            yield

    def _tell(self, trial: optuna.Trial, values: float | Sequence[float]) -> FrozenTrial:
        if self.budget.target is None:
            return self._told(trial, values)
        # Under the claim lock, so no worker checks the budget between this value being stored
        # and being counted: once it reaches the target, no trial starts after it.
        with self.claim_lock:
            return self._told(trial, values)

    def _told(
        self,
        trial: optuna.Trial,
        values: float | Sequence[float] | None = None,
        state: TrialState | None = None,
    ) -> FrozenTrial:
        """``study.tell`` as ``study.optimize`` does it: without a deep copy of the finished trial
        (its record included), which cost a cheap trial a tenth of its time; the row only reads it."""
        told_state, told_values, _ = _tell_with_warning(self.study, trial, values, state)
        return told_trial(self.storage, trial, told_state, told_values)

    def _fail(self, trial: optuna.Trial, reason: str) -> None:
        repro = self.objective.repro_fields(trial)
        write_record(trial, worker=self.identity, fail_reason=reason, repro=repro)

    def _record(self, trial: FrozenTrial) -> None:
        self.owners.clear(trial.number)
        try:
            self.csv.append(trial_row(trial))
        except OSError as err:  # a full disk, a quota: the study has the trial all the same
            logger.error(
                "could not write trial %d to %s (%s); the study has it: --export-csv rebuilds the file",
                trial.number,
                self.cfg.csv_path,
                err.strerror or err,
            )
        logger.info(
            "trial %d %s value=%s params=%s", trial.number, trial.state.name, trial.value, trial.params
        )

    def _out_of_time(self) -> bool:
        """Whether the next trial would not finish before the job's end (with 10% + 30 s to spare)."""
        if self.job_end is None or not self._durations:
            return False
        needed = max(self._durations) * 1.1 + 30
        if time.time() + needed <= self.job_end:
            return False
        logger.info(
            "the job ends in %.0f s; a trial needs about %.0f s: stopping", self.job_end - time.time(), needed
        )
        return True

    def _sweep(self) -> None:
        """Fail the trials of dead workers, so their places are not held to the end: by their
        owner files, and on an RDB storage by their heartbeats too (Optuna's ``study.optimize``
        asks at every trial; a dead worker's heartbeat is minutes old, so once per sweep is as
        soon, and a thousand workers do not each read every running trial at each claim)."""
        if is_heartbeat_enabled(self.storage):
            with warnings.catch_warnings():  # experimental in Optuna; chosen on purpose here
                warnings.simplefilter("ignore", ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)
        sweep_dead_trials(
            self.study,
            self.storage,
            self.owners,
            self.liveness,
            self.cfg.optuna.max_retries,
            lambda trial: self.csv.append(trial_row(trial)),
        )


def waiting_poll_s(poll_s: float, waited: int) -> float:
    """How long a worker sleeps after its ``waited``-th answer in a row that the budget is full.

    Doubling up to :data:`WAITING_POLL_MAX_S`, with jitter, so the waiting workers of a study
    do not all ask at the same instant.

    Example:
        >>> [round(waiting_poll_s(1.0, n), 1) <= 1.0 * 2**n for n in range(4)]
        [True, True, True, True]
        >>> waiting_poll_s(1.0, 50) <= WAITING_POLL_MAX_S
        True
    """
    ceiling = min(poll_s * 2 ** min(waited, 16), max(poll_s, WAITING_POLL_MAX_S))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not secrets


def job_end(value: str | None) -> float | None:
    """The job's end as a Unix time, from ``squeue -o %e`` output (local time, ISO format)."""
    if not value or not value.strip():
        return None
    try:
        return datetime.datetime.fromisoformat(value.strip()).timestamp()
    except ValueError:  # "N/A", "Unknown": no limit known
        return None

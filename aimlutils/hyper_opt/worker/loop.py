"""A worker: runs trials of the shared study until its ``n_trials`` budget is spent.

Launchers start one worker per GPU (or per CPU slot); each runs ``aimlutils-worker`` on the copies
of ``hyper.yml`` and ``model.yml`` saved in ``save_path``. A trial's life (claim, start, finish,
fail, give back) is :class:`~aimlutils.hyper_opt.coordination.TrialLife`'s; the worker decides
which verb each outcome of the user's ``train`` calls for.
"""

from __future__ import annotations

import datetime
import logging
import os
import random
import time
import traceback
import warnings
from pathlib import Path

import optuna
import yaml
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from aimlutils.hyper_opt import _optuna
from aimlutils.hyper_opt.config import RunConfig
from aimlutils.hyper_opt.coordination import (
    BadNodes,
    NodeState,
    ResultsCsv,
    Room,
    StudyTurn,
    TrialBudget,
    TrialLife,
    make_record,
    sweep_dead_trials,
)
from aimlutils.hyper_opt.coordination import study as study_lib
from aimlutils.hyper_opt.coordination.checkpoints import CheckpointRetention
from aimlutils.hyper_opt.coordination.usage import limits_of
from aimlutils.hyper_opt.coordination.wall_time import CLOCK, TIMING_KEY
from aimlutils.hyper_opt.objective.base import BaseObjective
from aimlutils.hyper_opt.objective.reproduce import TrialRecorder
from aimlutils.hyper_opt.stop import StopSignal, TrialInterrupted
from aimlutils.hyper_opt.storage import StorageUnavailable
from aimlutils.hyper_opt.worker.fit import JobEnd
from aimlutils.hyper_opt.worker.nodes import NodeWatch
from aimlutils.hyper_opt.worker.setup import (
    build_worker_objective,
    device_kind,
    liveness_for,
    worker_identity,
    worker_storage,
)
from aimlutils.hyper_opt.worker.timeout import TIMEOUT_REASON, TrialClock

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

    ``max_trials`` stops this worker sooner; ``reraise`` lets an objective's exception out once its
    trial is failed (for a debugger). ``storage``: the study's storage, when the caller opened it
    (threads of one process may share one); else the worker opens its own.
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
        storage: BaseStorage | None = None,
    ) -> None:
        self.cfg = cfg
        self.storage = storage if storage is not None else worker_storage(cfg, index)
        self.study = study_lib.load(cfg, self.storage, n_workers, index)
        self.budget = TrialBudget(
            self.study, self.storage, cfg.optuna.n_trials, cfg.optuna.target, limits_of(cfg)
        )
        self.n_trials = FollowedNTrials(cfg.paths.hyper_copy, cfg.optuna.n_trials)
        self.csv = ResultsCsv(cfg.csv_path)
        self.poll_s = poll_s
        self.max_trials = max_trials
        self.reraise = reraise
        self.identity = worker_identity(index)
        self.life = TrialLife(
            self.study,
            self.storage,
            cfg.paths,
            self.csv,
            self.identity,
            cfg.optuna.max_retries,
            lock_finish=cfg.optuna.target is not None,
            max_failures=cfg.optuna.max_failures,
            log=log_location(cfg),
            bad_nodes=BadNodes(cfg.paths.bad_nodes) if cfg.optuna.bad_node_failures is not None else None,
        )
        self.node = NodeWatch(self.life, self.identity.get("node"), cfg.optuna.bad_node_failures)
        self.liveness = liveness_for(cfg, os.environ, self.identity)
        self.sweep_turn = StudyTurn(cfg.paths.sweep_turn)
        self.retention = CheckpointRetention(self.study, cfg.paths, cfg.optuna.checkpoints.keep_best)
        self.clock = TrialClock(cfg.optuna.trial_timeout_s, cfg.optuna.trial_timeout_grace_s)
        #: Whether this worker finished a trial, or took an interrupted one a step further.
        self.progressed = False
        #: Whether it stopped because a trial would not reach its end, or a checkpoint, before its job's.
        self.out_of_time = False
        #: Tracebacks of failed trials logged so far, with the trial that first had each and a count.
        self._tracebacks: dict[str, list[int]] = {}
        self.objective = build_worker_objective(
            cfg, self.study, self.identity, objective_class, hold_records=True
        )
        # After the objective: its import may have loaded torch, which can name the GPUs.
        self.recorder = TrialRecorder(cfg, index, n_workers, objective_class)
        self.objective.recorder = self.recorder
        self.device = device_kind(cfg.optuna.gpu)
        end = job_end(os.environ.get("AIMLUTILS_JOB_END"))
        self.job = JobEnd(self.study, self.device, end, cfg.optuna.fit_wall_time)

    def run(self) -> int:
        """Run trials until the budget is spent (or ``max_trials``); returns how many this worker ran."""
        ran, waited = 0, 0
        try:
            while not self._should_stop(ran):
                if self.sweep_turn.take(SWEEP_INTERVAL_S):
                    self.sweep()
                claimed = self._claim()
                if claimed is Room.DONE:
                    if self.budget.spent is not None:
                        logger.warning("the study starts no more trials: %s", self.budget.spent)
                    break
                # Running trials fill the budget, and one may still fail; or this node is in doubt.
                if claimed is Room.WAIT:
                    if self.sweep_turn.take(WAITING_SWEEP_INTERVAL_S):
                        self.sweep()
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

    def _claim(self) -> optuna.Trial | Room | None:
        """The life's claim, unless this worker's node is marked bad (DONE: it leaves) or in doubt
        (WAIT: a trial on another node may settle it)."""
        node = self.node.check()
        if node is NodeState.BAD:
            return Room.DONE
        if node is NodeState.DOUBT:
            return Room.WAIT
        return self.life.claim(self.budget)

    def _should_stop(self, ran: int) -> bool:
        # Two stats of files in save_path: a changed n_trials counts from the next claim on, and
        # a stop another worker wrote stops this one too.
        self.budget.n_trials = self.n_trials.current()
        self.life.stopped()
        self.out_of_time = self.out_of_time or self.job.out_of_time()
        # life.stop is set at once when this worker's own failure spent the failure budget.
        stop = StopSignal.stopping() or self.out_of_time or self.life.stop is not None
        return stop or (self.max_trials is not None and ran >= self.max_trials)

    def _run_trial(self, trial: optuna.Trial) -> None:
        started, inherited = time.monotonic(), 0
        held = self.objective.held_records
        # Its checkpoints are timed; it is asked to stop at one after which the next would not come
        # before the job's end (optuna.fit_wall_time).
        CLOCK.start(self.job.job_end if self.job.fit else None, self.job.epoch_hint())
        try:
            with (
                self.life.start(trial) as inherited,
                self.clock.timing(trial.number),
                StopSignal.interruptible_section(),
            ):
                if inherited:
                    logger.info("trial %d continues trial %s", trial.number, trial.user_attrs["retry_of"])
                values = self.objective(trial)
        except optuna.TrialPruned:
            self.life.finish(trial, state=TrialState.PRUNED, record=self._record_fields(trial))
            self._tidy()
        except KeyboardInterrupt as err:
            if self.clock.expired and not StopSignal.stopping():
                # Its own time limit, not the worker's: it ends here, and the worker goes on.
                repro = self.objective.repro_fields(trial)
                self.life.fail(trial, TIMEOUT_REASON, repro=repro, timing=self._timing())
                return
            # Stopped, not wrong: its parameters get another run, which continues it.
            how = str(err) if isinstance(err, TrialInterrupted) else "Ctrl-C or SIGTERM"
            self.progressed = self.progressed or len(self.life.reported(trial)) > inherited
            repro = self.objective.repro_fields(trial)
            self.life.give_back(trial, f"interrupted ({how})", repro=repro, timing=self._timing())
            raise
        except StorageUnavailable:
            # The storage, not the trial, failed (a report or a pruning check met an outage
            # longer than optuna.storage_wait_s): the worker stops, and the trial, still RUNNING,
            # is recovered by a reload or a live worker's sweep, and run again.
            raise
        except Exception as err:
            self._log_failure(trial.number, traceback.format_exc())
            self.node.trial_failed()
            reason = f"{type(err).__name__}: {err}"
            repro = self.objective.repro_fields(trial)
            self.life.fail(trial, reason, by_objective=True, repro=repro, timing=self._timing())
            if self.reraise:
                raise
            return
        else:
            record = held.pop(trial.number, None) if held is not None else None
            record = {**record, TIMING_KEY: self._timing()} if record else self._record_fields(trial)
            self.life.finish(trial, values, record=record)
            self._tidy()
        finally:
            if held is not None:
                held.pop(trial.number, None)
            self.job.trial_ended(self._timing())
            CLOCK.stop()
        self.progressed = True
        self.job.durations.append(time.monotonic() - started)

    def _tidy(self) -> None:
        """Checkpoint retention after a trial ended; a file system's hiccup fails no trial."""
        try:
            self.retention.tidy()
        except OSError as err:
            logger.warning("could not remove checkpoints now: %s", err)

    def _log_failure(self, number: int, text: str) -> None:
        """The traceback of a failed trial, once per distinct traceback: a bug in the objective
        fails every trial the same way, and a log of thousands of copies hides everything else."""
        seen = self._tracebacks.setdefault(text, [number, 0])
        seen[1] += 1
        if seen[1] == 1:
            logger.error("trial %d failed:\n%s", number, text)
        else:
            last = text.strip().splitlines()[-1]
            logger.error("trial %d failed: %s (the traceback of trial %d; %d times)", number, last, *seen)

    def _record_fields(self, trial: optuna.Trial) -> dict[str, object]:
        return make_record(
            worker=self.identity, repro=self.objective.repro_fields(trial), timing=self._timing()
        )

    def _timing(self) -> dict[str, object] | None:
        """When the running trial saved its checkpoints, for its record."""
        return CLOCK.fields(self.device)

    def sweep(self) -> None:
        """Fail the trials of dead workers, so their places are not held to the end: by their
        owner files, and on an RDB storage by their heartbeats too (Optuna's ``study.optimize``
        asks at every trial; a dead worker's heartbeat is minutes old, so once per sweep is as
        soon, and a thousand workers do not each read every running trial at each claim)."""
        if _optuna.is_heartbeat_enabled(self.storage):
            with warnings.catch_warnings():  # experimental in Optuna; chosen on purpose here
                warnings.simplefilter("ignore", ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)
        sweep_dead_trials(self.life, self.liveness)


class FollowedNTrials:
    """``optuna.n_trials`` as the study's saved config says now: ``optimize.py --reload
    optuna.n_trials=K`` rewrites it, and every running worker takes it up at its next claim, as
    pending and requeued jobs do when they start. One ``stat`` per claim; read when it changed.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "hyper.yml"
        >>> followed = FollowedNTrials(path, 20)
        >>> followed.current()  # no saved config (the Python API): as started
        20
        >>> _ = path.write_text("optuna: {n_trials: 12}")
        >>> followed.current()
        12
    """

    def __init__(self, hyper_copy: Path, n_trials: int) -> None:
        self.path = hyper_copy
        self.n_trials = n_trials
        self._stamp: int | None = None

    def current(self) -> int:
        try:
            stamp = os.stat(self.path).st_mtime_ns
        except OSError:
            return self.n_trials
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                value = yaml.safe_load(self.path.read_text(encoding="utf-8"))["optuna"]["n_trials"]
            except (OSError, ValueError, KeyError, TypeError) as err:  # half written: next time
                logger.debug("could not read n_trials from %s: %s", self.path, err)
                self._stamp = None
                return self.n_trials
            if isinstance(value, int) and value >= 1 and value != self.n_trials:
                logger.warning(
                    "optuna.n_trials is now %d (was %d): %s changed", value, self.n_trials, self.path
                )
                self.n_trials = value
        return self.n_trials


def log_location(cfg: RunConfig) -> str | None:
    """Where this worker's tracebacks go: the study's log file, else the file its stderr is (a
    local worker's log, a job's output file); ``None`` for a terminal or a pipe."""
    if cfg.log_file is not None:
        return str(cfg.log_file)
    try:
        target = os.readlink("/proc/self/fd/2")
    except OSError:
        return None
    return target if target.startswith("/") and os.path.isfile(target) else None


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

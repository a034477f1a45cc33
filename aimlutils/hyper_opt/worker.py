"""A worker: runs trials of the shared study until its ``n_trials`` budget is spent.

Launchers start one worker per GPU (or per CPU slot); each runs ``aimlutils-worker`` on the copies
of ``hyper.yml`` and ``model.yml`` saved in ``save_path``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import logging
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from aimlutils.hyper_opt import study as study_lib
from aimlutils.hyper_opt.base_objective import BaseObjective
from aimlutils.hyper_opt.command_objective import CommandObjective
from aimlutils.hyper_opt.config import ConfigError, RunConfig, load_config
from aimlutils.hyper_opt.launchers.scheduler import scheduler_queue
from aimlutils.hyper_opt.liveness import Liveness
from aimlutils.hyper_opt.logs import configure_logging
from aimlutils.hyper_opt.objective_loader import build_objective, import_objective_module
from aimlutils.hyper_opt.results import ResultsCsv, trial_row
from aimlutils.hyper_opt.storage import open_storage
from aimlutils.hyper_opt.trial_record import RunningTrials, write_record

logger = logging.getLogger(__name__)

_JOB_ENV = ("SLURM_ARRAY_JOB_ID", "SLURM_JOB_ID", "PBS_JOBID")
#: How often a worker looks for trials of dead workers while the study runs.
SWEEP_INTERVAL_S = 60.0


class BudgetTaken(Exception):
    """Another worker claimed the last place in the budget first; this trial is not run."""


def device_for(gpu: bool, environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """``cuda:0`` when GPUs are wanted and this process was given one, else ``cpu``."""
    visible = environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    return "cuda:0" if gpu and visible and visible not in ("-1", "NoDevFiles") else "cpu"


def job_id(environ: dict[str, str] | os._Environ[str] = os.environ) -> str | None:
    """The scheduler's id of the job this worker runs in (``123_4`` for an array task)."""
    if environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{environ['SLURM_ARRAY_JOB_ID']}_{environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return next((environ[k] for k in _JOB_ENV[1:] if environ.get(k)), None)


class Worker:
    """Runs trials one after another; see :class:`aimlutils.hyper_opt.study.TrialBudget`."""

    def __init__(self, cfg: RunConfig, index: int = 0, n_workers: int = 1, poll_s: float = 1.0) -> None:
        self.cfg = cfg
        self.index = index
        self.storage = open_storage(cfg.storage)
        self.study = study_lib.load(cfg, self.storage, n_workers, index)
        self.budget = study_lib.TrialBudget(
            self.study, self.storage, cfg.optuna.n_trials, self._recover, cfg.optuna.target
        )
        self.claim_lock = study_lib.ClaimLock(cfg.save_path / ".claim.lock")
        self.running = RunningTrials(cfg.save_path / "running")
        self.csv = ResultsCsv(cfg.csv_path)
        self.poll_s = poll_s
        self.identity = {
            "worker": index,
            "host": socket.gethostname(),
            "node": os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
            "pid": os.getpid(),
            "job_id": job_id(),
            # Which run of the job this is: a requeued job keeps its id.
            "restarts": int(os.environ.get("SLURM_RESTART_COUNT") or 0),
            "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }
        queue = scheduler_queue(cfg) if self.identity["job_id"] else None
        self.liveness = Liveness(queue, cache=cfg.save_path / ".queue.json", me=self.identity)
        self._swept = time.monotonic()
        self.job_end = job_end(os.environ.get("AIMLUTILS_JOB_END"))
        self._durations: list[float] = []
        self.objective = self._build_objective()
        # The trial this worker runs now (number, storage id), for its CSV row.
        self._current: int | None = None
        self._current_id = -1

    def _build_objective(self) -> BaseObjective:
        device = device_for(self.cfg.optuna.gpu)
        metric: Any = self.cfg.metrics[0] if len(self.cfg.metrics) == 1 else list(self.cfg.metrics)
        available = {"study": self.study, "config": self.cfg.model, "metric": metric, "device": device}
        module = None
        if self.cfg.command is not None:
            objective: BaseObjective = CommandObjective(self.cfg.command, self.cfg.save_path, **available)
        elif self.cfg.objective is not None:
            module = import_objective_module(self.cfg.objective)
            objective = build_objective(module, available)
        # hyper.yml decides the metric and the device, whatever the Objective's defaults say.
        objective.metric, objective.device, objective.worker_index = metric, device, self.index
        objective.worker_identity = self.identity
        objective.search_space = self.cfg.space
        objective.optuna_section = dict(self.cfg.hyper["optuna"])
        objective.custom_updates = getattr(module, "custom_updates", None) if module else None
        if self.cfg.schema.mlflow is not None:
            from aimlutils.hyper_opt.tracking import TrialTracker  # MLflow only for studies that use it

            objective.mlflow_run = TrialTracker(self.cfg, self.identity).trial_run
        return objective

    def run(self) -> int:
        """Run trials until the budget is spent; returns how many this worker ran."""
        ran = 0
        try:
            while not self._out_of_time() and StopSignal.signum is None:
                self._sweep_now_and_then()
                self.claim_lock.acquire()
                if StopSignal.signum is not None:
                    break
                room = self.budget.has_room()
                if room is None:  # running trials fill the budget; one may still fail
                    self.claim_lock.release()
                    time.sleep(self.poll_s)
                    continue
                if not room:
                    break
                # _run_trial releases the lock as soon as the new trial exists.
                started = time.monotonic()
                self.study.optimize(self._run_trial, n_trials=1, catch=(Exception,))
                self._durations.append(time.monotonic() - started)
                self._record(self.storage.get_trial(self._current_id))
                ran += 1
        except KeyboardInterrupt:
            # Optuna has already marked the running trial FAIL: give it its CSV row.
            self._record_interrupted()
            raise
        finally:
            self.claim_lock.release()
            self.csv.close()
        return ran

    def _run_trial(self, trial: optuna.Trial) -> float | list[float]:
        self._current, self._current_id = trial.number, trial._trial_id
        self.running.mark(trial.number, self.identity)
        self.claim_lock.release()
        if not self.budget.admits(trial.number):
            self._fail(trial, "not run: another worker took the last place in n_trials")
            self._requeue_fixed_params(trial)
            raise BudgetTaken(f"trial {trial.number} not run: n_trials is already taken")
        try:
            with StopSignal.interruptible_section():
                result = self.objective(trial)
            if self.budget.target is not None:
                # Held until this worker's next budget check: Optuna stores the value meanwhile,
                # so no worker starts a trial between it reaching the target and the check.
                self.claim_lock.acquire()
            return result
        except optuna.TrialPruned:
            write_record(trial, worker=self.identity)
            raise
        except KeyboardInterrupt:
            # Stopped, not wrong: its parameters get another run. Queued before Optuna marks the
            # trial FAIL, since the scheduler may SIGKILL this process any moment now.
            self._fail(trial, "interrupted (Ctrl-C or SIGTERM)")
            study_lib.requeue(self.study, trial, self.cfg.optuna.max_retries)
            raise
        except Exception as err:
            self._fail(trial, f"{type(err).__name__}: {err}")
            logger.error("trial %d failed:\n%s", trial.number, traceback.format_exc())
            raise

    def _fail(self, trial: optuna.Trial, reason: str) -> None:
        write_record(trial, worker=self.identity, fail_reason=reason)

    def _requeue_fixed_params(self, trial: optuna.Trial) -> None:
        fixed = self.storage.get_trial_system_attrs(trial._trial_id).get("fixed_params")
        if fixed:
            self.study.enqueue_trial(fixed, user_attrs=dict(trial.user_attrs))

    def _record(self, trial: FrozenTrial) -> None:
        self._current = None
        self.running.clear(trial.number)
        self.csv.append(trial_row(trial))
        logger.info(
            "trial %d %s value=%s params=%s", trial.number, trial.state.name, trial.value, trial.params
        )

    def _record_interrupted(self) -> None:
        if self._current is None:
            return
        trial = self.storage.get_trial(self._current_id)
        if trial.state == TrialState.FAIL:
            self._record(trial)

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

    def _sweep_now_and_then(self) -> None:
        """Once a minute, fail the trials of dead workers, so their places are not held to the end."""
        if time.monotonic() - self._swept < SWEEP_INTERVAL_S:
            return
        self._swept = time.monotonic()
        self._recover(self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

    def _recover(self, running: list[FrozenTrial]) -> None:
        dead = study_lib.fail_dead_trials(
            self.study, self.storage, running, self.running, self.liveness, self.cfg.optuna.max_retries
        )
        for number in dead:
            self.csv.append(trial_row(self.study.get_trials(deepcopy=False)[number]))


def job_end(value: str | None) -> float | None:
    """The job's end as a Unix time, from ``squeue -o %e`` output (local time, ISO format)."""
    if not value or not value.strip():
        return None
    try:
        return datetime.datetime.fromisoformat(value.strip()).timestamp()
    except ValueError:  # "N/A", "Unknown": no limit known
        return None


class StopSignal:
    """A request to stop: SIGTERM (scancel, time limit, preemption, the local launcher), SIGUSR1
    (a ``--signal``) or SIGINT.

    It interrupts the user's training at once, which fails the running trial and queues its
    parameters again. Anywhere else it is only noted and the worker stops at its next safe point,
    so a signal can never leave a trial created but unowned. Later signals are ignored while the
    worker cleans up.
    """

    signum: int | None = None
    interruptible = False

    @classmethod
    def handler(cls, signum: int, frame: Any) -> None:
        if cls.signum is not None:
            return
        cls.signum = signum
        if cls.interruptible:
            raise KeyboardInterrupt

    @classmethod
    @contextlib.contextmanager
    def interruptible_section(cls) -> Iterator[None]:
        if cls.signum is not None:
            raise KeyboardInterrupt
        cls.interruptible = True
        try:
            yield
        finally:
            cls.interruptible = False


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="aimlutils-worker", description="Run trials of a study until its n_trials are done."
    )
    parser.add_argument("hyper", help="hyper.yml (the copy in save_path)")
    parser.add_argument("model", help="model.yml (the copy in save_path)")
    parser.add_argument("--index", type=int, default=0, help="this worker's number (default 0)")
    parser.add_argument("--workers", type=int, default=1, help="how many workers share the study")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(signum, StopSignal.handler)
    try:
        cfg = load_config(args.hyper, args.model)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return err.exit_code
    configure_logging(cfg.log_file, prefix=f"worker {args.index}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with StopSignal.interruptible_section():  # nothing to protect until the worker exists
            worker = Worker(cfg, args.index, args.workers)
        ran = worker.run()
    except KeyboardInterrupt:
        logger.warning("stopped by a signal; the running trial was marked FAIL and queued again")
        return 130 if StopSignal.signum in (None, signal.SIGINT) else 0
    if StopSignal.signum is not None:
        logger.warning("stopped by a signal between trials; ran %d", ran)
        return 130 if StopSignal.signum == signal.SIGINT else 0
    logger.info("no trials left in the budget; ran %d", ran)
    return 0


if __name__ == "__main__":
    sys.exit(main())

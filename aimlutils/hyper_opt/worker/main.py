"""``aimlutils-worker`` / ``python -m aimlutils.hyper_opt.worker``: a worker process, start to exit code."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence

import optuna

from aimlutils.hyper_opt.config import ConfigError, load_config
from aimlutils.hyper_opt.coordination import Room
from aimlutils.hyper_opt.errors import ExitCode
from aimlutils.hyper_opt.lifeline import watch_parent
from aimlutils.hyper_opt.logs import configure_logging
from aimlutils.hyper_opt.paths import keep_private
from aimlutils.hyper_opt.stop import LEFT_FOR_LATER_EXIT_CODE, WARNING_SIGNAL, StopSignal
from aimlutils.hyper_opt.storage.resilient import StorageUnavailable
from aimlutils.hyper_opt.worker.loop import Worker, job_end

logger = logging.getLogger("aimlutils.hyper_opt.worker")


def arm_stop_warning(environ: Mapping[str, str] = os.environ) -> threading.Timer | None:
    """Send this worker SIGUSR1 ``AIMLUTILS_STOP_WARNING_S`` seconds before ``AIMLUTILS_JOB_END``.

    For schedulers with no warning signal of their own (PBS): their job script exports both. The
    worker then treats it as it treats Slurm's ``--signal``: no new trial, and ``train`` may save
    and leave.
    """
    end = job_end(environ.get("AIMLUTILS_JOB_END"))
    try:
        seconds = float(environ.get("AIMLUTILS_STOP_WARNING_S", ""))
    except ValueError:
        return None
    if end is None or seconds <= 0:
        return None
    timer = threading.Timer(max(0.0, end - seconds - time.time()), os.kill, (os.getpid(), WARNING_SIGNAL))
    timer.daemon = True
    timer.start()
    return timer


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
    watch_parent(signal.SIGTERM)  # a local launcher that dies stops this worker
    arm_stop_warning()
    try:
        cfg = load_config(args.hyper, args.model)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return err.exit_code
    keep_private(cfg.save_path, cfg.optuna.readable_by)
    configure_logging(cfg.log_file, prefix=f"worker {args.index}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    worker: Worker | None = None
    try:
        with StopSignal.interruptible_section():  # nothing to protect until the worker exists
            worker = Worker(cfg, args.index, args.workers)
        ran = worker.run()
    except KeyboardInterrupt:
        logger.warning("stopped by a signal; the running trial was marked FAIL and queued again")
        return ExitCode.INTERRUPTED if StopSignal.signum in (None, signal.SIGINT) else left_code(worker)
    except StorageUnavailable as err:
        # Its running trial stays RUNNING: the reload (or a live worker's sweep) recovers it.
        logger.error("stopping: %s", err)
        return err.exit_code
    if StopSignal.stopping():
        logger.warning("stopped by a signal between trials; ran %d", ran)
        return ExitCode.INTERRUPTED if StopSignal.signum == signal.SIGINT else left_code(worker)
    if worker.life.stop is not None:
        logger.error("stopping, ran %d: %s", ran, worker.life.stop.message())
        return ExitCode.STUDY_STOPPED  # a job does not run again for a study that cannot succeed
    if worker.node.left is not None:
        why = worker.node.left.describe()
        logger.error("leaving node %s, marked bad (ran %d): %s", worker.node.node, ran, why)
        return left_code(worker, moving=True)  # its job runs again on another node
    if worker.out_of_time:
        return left_code(worker)
    logger.info("no trials left in the budget; ran %d", ran)
    return 0


def left_code(worker: Worker | None, moving: bool = False) -> int:
    """The exit code of a worker that left early: in a batch job, having made progress, with its
    study not done, :data:`LEFT_FOR_LATER_EXIT_CODE` (its job may run again to go on); else 0. A
    job whose workers make no progress (an epoch longer than the job) is not run again and again,
    nor one whose study was done meanwhile (its last trial ended as its time ran out). ``moving``:
    it leaves a node marked bad, progress or not; its job's next run excludes that node."""
    if worker is None or not (worker.progressed or moving) or not worker.identity.get("job_id"):
        return 0
    if worker.life.stopped() is not None:
        return ExitCode.STUDY_STOPPED
    try:
        done = worker.budget.check() is Room.DONE
    except Exception as err:  # any storage error: better a run that finds nothing to do than none
        logger.warning("could not tell whether the study is done (%s); asking for another run", err)
        done = False
    return 0 if done else LEFT_FOR_LATER_EXIT_CODE

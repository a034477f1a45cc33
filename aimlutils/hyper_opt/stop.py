"""Requests to stop a worker, and how a training loop asks whether one came.

A module of its own (the worker's ``StopSignal`` lives here): a worker runs as ``python -m
aimlutils.hyper_opt.worker``, so that module is ``__main__``, and what the signal handlers set must
be found under one import path by the user's ``train``, :mod:`aimlutils.hyper_opt.objective.training` and the
command objective.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from aimlutils.hyper_opt.errors import ExitCode, HyperOptException

#: The warning before a job's time limit (``#SBATCH --signal=B:USR1@...``): finish the epoch, save,
#: and leave; the trial is continued later.
WARNING_SIGNAL = signal.SIGUSR1
#: A worker's exit code in a batch job that it left, its time being up, with trials of its study
#: still to run and progress made: the job script then puts the job back in the queue.
LEFT_FOR_LATER_EXIT_CODE = int(ExitCode.LEFT_FOR_LATER)


class TrialInterrupted(HyperOptException, KeyboardInterrupt):
    """Raised by :func:`stop_if_requested`: the trial stops here, saved, and is continued later.

    A ``KeyboardInterrupt``, as the worker's own interruption is: the worker fails the trial,
    queues its parameters again (the trial that runs them continues this one) and exits.
    """


class TrialTimedOut(HyperOptException, KeyboardInterrupt):
    """Raised in a trial that ran past ``optuna.trial_timeout_s`` and the grace after it without
    leaving: the worker fails the trial with the reason "timeout" and goes on with the next one.

    A ``KeyboardInterrupt``, so that an ``except Exception`` in ``train`` does not swallow it.
    """


class StopSignal:
    """A request to stop: SIGTERM (scancel, time limit, preemption, the local launcher), SIGINT,
    or SIGUSR1 (the warning before a job's time limit).

    SIGTERM and SIGINT interrupt the user's training at once, which fails the running trial and
    queues its parameters again; anywhere outside training they are only noted and the worker
    stops at its next safe point, so a signal can never leave a trial created but unowned. Later
    signals are ignored while the worker cleans up.

    SIGUSR1 stops nothing by itself: training goes on until ``train`` checks
    :func:`stop_requested` (then saves and leaves, and the worker exits) or the trial ends, and
    the worker goes on while the job lasts (its job-end rule decides about new trials), since a
    warning that came early, or a trial that never checks, must not leave the job idle. A
    SIGTERM after it interrupts as usual.
    """

    signum: int | None = None
    interruptible = False
    #: Why the worker warned itself (:meth:`warn`), where no signal came.
    reason: str | None = None

    @classmethod
    def handler(cls, signum: int, frame: Any) -> None:
        if signum == WARNING_SIGNAL:
            if cls.signum is None:
                cls.signum = signum
            return
        if cls.stopping():
            return  # a stop is under way
        cls.signum = signum
        if cls.interruptible:
            raise KeyboardInterrupt

    @classmethod
    def warn(cls, reason: str) -> None:
        """As the warning signal does, without one: the running trial may save and leave, and
        the worker goes on while its job lasts (its own decision, such as a job's end that the
        next checkpoint would not reach). Nothing changes once a stop or a warning came."""
        if cls.signum is None:
            cls.signum, cls.reason = WARNING_SIGNAL, reason

    @classmethod
    def stopping(cls) -> bool:
        """Whether a stop (not only the warning) was requested: the worker starts no new trial."""
        return cls.signum is not None and cls.signum != WARNING_SIGNAL

    @classmethod
    @contextlib.contextmanager
    def shielded(cls) -> Iterator[None]:
        """No interruption inside, even in an interruptible section: a stop that comes meanwhile
        interrupts at the end. For a lock's short hold, which an interruption inside would leave
        taken (the worker's own clean-up would then wait for it forever).

        Signal handlers run in the main thread: other threads are never interrupted, and a
        shield there would hide the main thread's section.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        was, cls.interruptible = cls.interruptible, False
        try:
            yield
        finally:
            cls.interruptible = was
        if was and cls.stopping():
            raise KeyboardInterrupt

    @classmethod
    @contextlib.contextmanager
    def interruptible_section(cls) -> Iterator[None]:
        if cls.stopping():
            raise KeyboardInterrupt
        cls.interruptible = True
        try:
            yield
        finally:
            cls.interruptible = False


def stop_requested() -> bool:
    """Whether this worker was asked to stop (the time limit's warning, scancel, Ctrl-C).

    Check it between epochs, after saving a checkpoint: a trial that leaves then is continued,
    from that checkpoint, by the trial that re-runs its parameters.

        >>> stop_requested()
        False
    """
    return StopSignal.signum is not None


def stop_if_requested() -> None:
    """Raise :class:`TrialInterrupted` when a stop was requested; call it right after saving.

    >>> stop_if_requested()  # nothing was requested
    """
    if stop_requested():
        if StopSignal.reason is not None:
            raise TrialInterrupted(f"stopped at a checkpoint: {StopSignal.reason}")
        name = signal.Signals(StopSignal.signum).name if StopSignal.signum else "a signal"
        raise TrialInterrupted(f"stopped at a checkpoint on {name}")

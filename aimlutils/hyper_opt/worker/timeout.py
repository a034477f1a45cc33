"""``optuna.trial_timeout_s``: a trial's own time limit, as a job's time limit treats a trial.

At the limit the trial is asked to stop, as by the warning before a job's time limit
(:func:`~aimlutils.hyper_opt.stop.stop_requested` turns true, so a ``train`` that checks
:func:`~aimlutils.hyper_opt.stop.stop_if_requested` after its checkpoint leaves there); a trial
that has not left ``optuna.trial_timeout_grace_s`` later is interrupted with
:class:`~aimlutils.hyper_opt.stop.TrialTimedOut`. Either way the worker fails it with the reason
"timeout" (not a failure of the objective: the failure budget does not count it, and its
parameters are not queued again, since they would run as long) and goes on.

The clock is the process's ``SIGALRM`` timer, so a trial asleep or in a long C call is reached;
it needs the main thread. In another thread (the Python API's threads, the benchmarks) only the
request to stop is made, by a timer thread, and a trial that does not check is not interrupted.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any

from aimlutils.hyper_opt.stop import WARNING_SIGNAL, StopSignal, TrialTimedOut

logger = logging.getLogger(__name__)

#: The ``fail_reason`` of a trial that ran past its limit.
TIMEOUT_REASON = "timeout"
#: How soon the clock asks again when the limit's interruption comes while the trial is finishing.
_RETRY_S = 0.5


class TrialClock:
    """Times one trial at a time against ``limit_s`` (``None``: no limit)."""

    def __init__(self, limit_s: float | None, grace_s: float) -> None:
        self.limit_s = limit_s
        self.grace_s = grace_s
        #: Whether the running (or last) trial passed its limit.
        self.expired = False
        self._requested = False

    @contextlib.contextmanager
    def timing(self, number: int) -> Iterator[None]:
        """Around one trial's run: asks it to stop at the limit, interrupts it after the grace."""
        self.expired, self._requested = False, False
        if self.limit_s is None:
            yield
            return
        if threading.current_thread() is not threading.main_thread():
            timer = threading.Timer(self.limit_s, self._ask_to_stop, (number,))
            timer.daemon = True
            timer.start()
            try:
                yield
            finally:
                timer.cancel()
                self._withdraw()
            return
        previous = signal.signal(signal.SIGALRM, lambda signum, frame: self._alarm(number))
        signal.setitimer(signal.ITIMER_REAL, self.limit_s)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            self._withdraw()

    def _ask_to_stop(self, number: int) -> None:
        self.expired = True
        logger.warning(
            "trial %d ran past optuna.trial_timeout_s (%g s): asked to stop, interrupted %g s later if it "
            "has not left",
            number,
            self.limit_s,
            self.grace_s,
        )
        if StopSignal.signum is None:  # a request of the job's own stays as it is
            StopSignal.signum = WARNING_SIGNAL
            self._requested = True

    def _alarm(self, number: int) -> Any:
        if not self.expired:
            self._ask_to_stop(number)
            signal.setitimer(signal.ITIMER_REAL, max(self.grace_s, 0.001))
            return
        if not StopSignal.interruptible:  # the trial is being finished: nothing to interrupt
            signal.setitimer(signal.ITIMER_REAL, _RETRY_S)
            return
        raise TrialTimedOut(f"ran past optuna.trial_timeout_s ({self.limit_s:g} s) and its grace")

    def _withdraw(self) -> None:
        """Take back this clock's request to stop, so the worker goes on with its next trial."""
        if self._requested and StopSignal.signum == WARNING_SIGNAL:
            StopSignal.signum = None
        self._requested = False

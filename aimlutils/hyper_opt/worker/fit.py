"""Whether a worker in a job with a known end starts another trial: the job-end rule
(:mod:`aimlutils.hyper_opt.coordination.wall_time` says what the study's checkpoint times are for).
"""

from __future__ import annotations

import logging
import time

import optuna

from aimlutils.hyper_opt.coordination.wall_time import CheckpointTimes, checkpoint_times, fits

logger = logging.getLogger("aimlutils.hyper_opt.worker")

#: How long the study's checkpoint times are kept before they are read again.
REREAD_S = 30.0


class JobEnd:
    """The job-end rule of one worker.

    With ``fit`` (``optuna.fit_wall_time``) and trials of its kind of GPU (``device``) that saved
    a checkpoint: a trial must reach its first checkpoint before ``job_end`` (the study's longest
    first checkpoint of late). Without (no checkpoint seen yet, or ``fit`` off), as before: it must
    finish (the longest trial this worker finished). ``job_end``: ``None`` outside a job, or for a
    job without a limit: then there is no rule.
    """

    def __init__(self, study: optuna.Study, device: str, job_end: float | None, fit: bool) -> None:
        self.study, self.device, self.job_end, self.fit = study, device, job_end, fit
        self.durations: list[float] = []
        self._times: CheckpointTimes | None = None
        self._read_at = float("-inf")

    def times(self) -> CheckpointTimes | None:
        """The study's checkpoint times on this worker's kind of GPU (read every :data:`REREAD_S`)."""
        if not self.fit or self.job_end is None:
            return None
        if time.monotonic() - self._read_at >= REREAD_S:
            self._times = checkpoint_times(self.study.get_trials(deepcopy=False), self.device)
            self._read_at = time.monotonic()
        return self._times

    def trial_ended(self, timing: dict[str, object] | None) -> None:
        """A trial of this worker's ended, with ``timing`` in its record: when it saved a
        checkpoint, the next decision reads the study again. (``durations``, of the trials it
        finished, are the worker's to add.)"""
        if timing is not None and timing.get("first_s") is not None:
            self._read_at = float("-inf")

    def epoch_hint(self) -> float | None:
        """An epoch's length on this kind of GPU, from the study, for a trial that has not shown its own."""
        times = self.times()
        return times.epoch_s if times is not None else None

    def out_of_time(self) -> bool:
        """Whether the next trial would not reach what it needs before the job's end: said once in
        the log, as the worker leaves."""
        if self.job_end is None:
            return False
        times = self.times()
        if times is not None:
            room = fits(times.first_s, self.job_end)
            what = (
                f"a trial takes up to {times.first_s:.0f} s to its first checkpoint on {self.device} "
                f"({times.trials} latest)"
            )
        elif self.durations:
            room = fits_finish(max(self.durations), self.job_end)
            what = f"a trial takes up to {max(self.durations):.0f} s to finish"
        else:
            return False  # nothing to go by: trials start as long as the job lasts
        if not room:
            left = self.job_end - time.time()
            logger.info("the job ends in %.0f s and %s: leaving, for the job's next run", left, what)
        return not room


def fits_finish(seconds: float, job_end: float) -> bool:
    """The rule without checkpoints: a trial as long as the longest finished, with 10% + 30 s to spare."""
    return time.time() + seconds * 1.1 + 30 <= job_end

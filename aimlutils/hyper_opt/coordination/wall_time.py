"""Trials that fit the wall time: when each trial saves its checkpoints, and what a job's end
leaves room for (``optuna.fit_wall_time``).

A trial stopped at its job's time limit loses what it trained since its last checkpoint, and one
that saved none loses all of it. Each trial's record keeps when its checkpoints came (``timing``:
seconds from its start to the first and to the last, the longest between two, and the kind of GPU
it ran on), so that every worker learns from the study how long a trial takes to its first
checkpoint on its kind of GPU, and how long an epoch is. With that, in a job with a known end, a
worker

- starts no trial (new, or continuing a stopped one) that could not reach a checkpoint before its
  job's end: it leaves instead, and its job goes back in the queue;
- after a checkpoint, when the next would not come before the job's end, asks the trial to stop
  there, as the warning before the time limit does (:meth:`StopSignal.warn`): a ``train`` that
  calls ``stop_if_requested`` after saving leaves at once, and nothing is cut.

:data:`CLOCK` is told of each checkpoint by ``TorchCheckpoint.save``, ``KerasCheckpoint`` and
``BaseObjective.checkpoint_saved()`` (for checkpoints saved another way); outside a worker's
trial it does nothing.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Sequence
from typing import Any

from optuna.trial import FrozenTrial

from aimlutils.hyper_opt.coordination.records import read_record
from aimlutils.hyper_opt.stop import StopSignal

#: The key of a trial's record that holds its checkpoint times (:meth:`CheckpointClock.fields`).
TIMING_KEY = "timing"
#: How many of the latest timed trials of a kind of GPU the estimates are made of.
RECENT_TRIALS = 20
#: What is asked of the room left before a job's end: the estimate times this, plus the margin.
FIT_FACTOR, FIT_MARGIN_S = 1.1, 5.0


def fits(seconds: float, job_end: float, now: float | None = None) -> bool:
    """Whether a stretch of about ``seconds`` (with the factor and margin) ends before ``job_end``
    (a Unix time).

    Example:
        >>> fits(45.0, job_end=1000.0, now=900.0), fits(45.0, job_end=1000.0, now=950.0)
        (True, False)
    """
    return (now if now is not None else time.time()) + seconds * FIT_FACTOR + FIT_MARGIN_S <= job_end


class CheckpointClock:
    """When the trial this process runs saved its checkpoints, from the trial's start.

    The worker :meth:`start`\\ s it with each trial (and the job's end, when the trial should stop
    at a checkpoint after which the next would not come in time); :meth:`saved` is called after
    each checkpoint; :meth:`fields` is what the trial's record keeps.

    Example:
        >>> clock = CheckpointClock()
        >>> clock.saved()  # outside a trial: nothing
        >>> clock.start()
        >>> clock.saved(); clock.saved()
        >>> timing = clock.fields("cpu")
        >>> timing["checkpoints"], timing["device"], timing["first_s"] <= timing["last_s"]
        (2, 'cpu', True)
    """

    def __init__(self) -> None:
        self._start: float | None = None
        self._saved: list[float] = []
        self.job_end: float | None = None
        self.epoch_hint: float | None = None

    def start(self, job_end: float | None = None, epoch_hint: float | None = None) -> None:
        """A trial starts. ``job_end``: stop it at a checkpoint after which the next would not come
        before then (``None``: never); ``epoch_hint``: an epoch's length until the trial has shown
        its own (from the study's other trials)."""
        self._start, self._saved = time.monotonic(), []
        self.job_end, self.epoch_hint = job_end, epoch_hint

    def stop(self) -> None:
        """The trial ended: later checkpoints (of no trial) are not counted."""
        self._start, self.job_end = None, None

    def saved(self) -> None:
        """A checkpoint was saved just now."""
        if self._start is None:
            return
        self._saved.append(time.monotonic() - self._start)
        epoch = self.epoch_s()
        if self.job_end is None or epoch is None or fits(epoch, self.job_end):
            return
        left = self.job_end - time.time()
        late = f"would come after the job's end in {left:.0f} s"
        StopSignal.warn(f"the next checkpoint (an epoch of about {epoch:.0f} s) {late}")

    def epoch_s(self) -> float | None:
        """How long until the next checkpoint: the longest time between two of this trial's, else
        ``epoch_hint``, else the time to its first (set-up and an epoch: too long rather than too
        short, since stopping early only ends the job sooner, while a cut epoch is lost)."""
        gaps = [b - a for a, b in itertools.pairwise(self._saved)]
        if gaps:
            return max(gaps)
        return self.epoch_hint if self.epoch_hint is not None else (self._saved[0] if self._saved else None)

    def fields(self, device: str) -> dict[str, Any] | None:
        """What the trial's record keeps (``None`` outside a trial): ``device``, ``ran_s`` and,
        once it saved one, ``checkpoints`` (how many), ``first_s``, ``last_s`` and ``epoch_s``
        (the longest between two), in seconds from its start."""
        if self._start is None:
            return None
        out: dict[str, Any] = {"device": device, "ran_s": round(time.monotonic() - self._start, 3)}
        if self._saved:
            out.update(checkpoints=len(self._saved), first_s=round(self._saved[0], 3))
            out["last_s"] = round(self._saved[-1], 3)
            gaps = [b - a for a, b in itertools.pairwise(self._saved)]
            if gaps:
                out["epoch_s"] = round(max(gaps), 3)
        return out


#: The clock of the trial this process runs (one trial at a time per worker process).
CLOCK = CheckpointClock()


def checkpoint_saved() -> None:
    """Tell the worker that the running trial saved a checkpoint just now (see the module)."""
    CLOCK.saved()


@dataclasses.dataclass(frozen=True)
class CheckpointTimes:
    """What the study's trials on one kind of GPU say of their checkpoints."""

    first_s: float
    """The longest time to a first checkpoint among the latest timed trials."""
    epoch_s: float | None
    """The longest time between two checkpoints among them (``None``: none saved two)."""
    trials: int
    """How many trials it comes from."""


def checkpoint_times(
    trials: Sequence[FrozenTrial], device: str, recent: int = RECENT_TRIALS
) -> CheckpointTimes | None:
    """The checkpoint times of the latest ``recent`` trials on ``device`` that saved one; ``None``
    without any (no history: a worker then starts trials as it would without this).

    Example:
        >>> from optuna.trial import create_trial
        >>> def timed(**timing):
        ...     return create_trial(value=1.0, user_attrs={"record": {"timing": timing}})
        >>> trials = [timed(device="A100", first_s=40.0, epoch_s=10.0), timed(device="A100", first_s=45.0)]
        >>> checkpoint_times(trials + [timed(device="cpu", first_s=300.0)], "A100")
        CheckpointTimes(first_s=45.0, epoch_s=10.0, trials=2)
        >>> checkpoint_times(trials, "V100") is None
        True
    """
    timed = []
    for trial in trials:
        timing = read_record(trial).get(TIMING_KEY)
        if isinstance(timing, dict) and timing.get("device") == device and timing.get("first_s") is not None:
            timed.append((trial.number, timing))
    latest = [timing for _, timing in sorted(timed, key=lambda item: item[0])[-recent:]]
    if not latest:
        return None
    epochs = [float(t["epoch_s"]) for t in latest if t.get("epoch_s") is not None]
    return CheckpointTimes(max(float(t["first_s"]) for t in latest), max(epochs, default=None), len(latest))

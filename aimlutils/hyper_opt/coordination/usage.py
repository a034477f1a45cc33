"""What a study has used: wall time since its first trial began, and GPU-hours (each trial's
wall time x its GPUs), against ``optuna.time_budget_s`` and ``optuna.gpu_hours``.

Both are read from the stored trials, so every worker, ``status`` and ``optimize.py`` agree
without a file of their own: the study's time starts at its first trial's start, and a trial's
GPUs are those its worker had (``CUDA_VISIBLE_DEVICES`` in its record), or, while it runs,
the study's GPUs per trial.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable

from optuna.trial import FrozenTrial

from aimlutils.hyper_opt.config import RunConfig
from aimlutils.hyper_opt.coordination.records import read_record


def trial_gpus(trial: FrozenTrial, running_default: int) -> int:
    """The GPUs the trial's worker had; ``running_default`` before its record is written.

    Example:
        >>> import optuna
        >>> trial = optuna.trial.create_trial(value=1.0)
        >>> trial.set_user_attr("record", {"worker": {"gpu": "0,1"}})
        >>> trial_gpus(trial, 1)
        2
    """
    record = read_record(trial)
    if not record:
        return running_default
    ids = str((record.get("worker") or {}).get("gpu") or "")
    return len([g for g in ids.split(",") if g.strip()])


def trial_gpu_hours(trial: FrozenTrial, running_default: int, now: datetime.datetime) -> float:
    """Wall time x GPUs of the trial, in hours (a running trial's so far)."""
    if trial.datetime_start is None:
        return 0.0
    end = trial.datetime_complete or now
    return max(0.0, (end - trial.datetime_start).total_seconds()) * trial_gpus(trial, running_default) / 3600


@dataclasses.dataclass(frozen=True)
class Usage:
    """A study's use so far."""

    elapsed_s: float
    gpu_hours: float

    @classmethod
    def of(
        cls, trials: Iterable[FrozenTrial], running_default: int, now: datetime.datetime | None = None
    ) -> Usage:
        now = now or datetime.datetime.now()
        trials = list(trials)
        starts = [t.datetime_start for t in trials if t.datetime_start is not None]
        elapsed = (now - min(starts)).total_seconds() if starts else 0.0
        return cls(max(0.0, elapsed), sum(trial_gpu_hours(t, running_default, now) for t in trials))


@dataclasses.dataclass(frozen=True)
class StudyLimits:
    """``optuna.time_budget_s`` and ``optuna.gpu_hours``; ``running_default``: GPUs of a trial
    whose record is not written yet (``gpus_per_trial`` with ``gpu: true``, else 0)."""

    time_budget_s: float | None
    gpu_hours: float | None
    running_default: int = 0

    @property
    def any(self) -> bool:
        return self.time_budget_s is not None or self.gpu_hours is not None

    def spent(self, usage: Usage) -> str | None:
        """Which budget is spent, in words; ``None`` while both last.

        Example:
            >>> StudyLimits(60, None).spent(Usage(61.0, 0.0))
            'its time budget (optuna.time_budget_s = 60 s) is spent: 61 s since its first trial began'
            >>> StudyLimits(None, 2).spent(Usage(10.0, 1.5)) is None
            True
        """
        if self.time_budget_s is not None and usage.elapsed_s >= self.time_budget_s:
            return (
                f"its time budget (optuna.time_budget_s = {self.time_budget_s:g} s) is spent: "
                f"{usage.elapsed_s:.0f} s since its first trial began"
            )
        if self.gpu_hours is not None and usage.gpu_hours >= self.gpu_hours:
            return (
                f"its GPU-hours (optuna.gpu_hours = {self.gpu_hours:g}) are spent: "
                f"{usage.gpu_hours:.4g} GPU-hours used"
            )
        return None

    def left(self, usage: Usage) -> str:
        """Used and left of each budget, for ``status``."""
        parts = [f"{usage.elapsed_s:.0f} s since the first trial", f"{usage.gpu_hours:.4g} GPU-hours used"]
        if self.time_budget_s is not None:
            parts[0] += (
                f" ({max(0.0, self.time_budget_s - usage.elapsed_s):.0f} s of optuna.time_budget_s left)"
            )
        if self.gpu_hours is not None:
            parts[1] += f" ({max(0.0, self.gpu_hours - usage.gpu_hours):.4g} of optuna.gpu_hours left)"
        return "; ".join(parts)


def limits_of(cfg: RunConfig) -> StudyLimits:
    """The study's budgets of time and GPU-hours, as ``hyper.yml`` sets them."""
    return StudyLimits(
        cfg.optuna.time_budget_s, cfg.optuna.gpu_hours, cfg.gpus_per_trial if cfg.optuna.gpu else 0
    )


def spent_now(cfg: RunConfig, trials: Iterable[FrozenTrial]) -> str | None:
    """Which of the study's budgets is spent now, in words; ``None`` when none (or none is set)."""
    limits = limits_of(cfg)
    return limits.spent(Usage.of(trials, limits.running_default)) if limits.any else None

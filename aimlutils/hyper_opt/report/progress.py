"""What a study looks like right now: counts, best value, rate; shown live and as a summary."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.table import Table

from aimlutils.hyper_opt._text import show
from aimlutils.hyper_opt.coordination.budget import count, target_trial


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A study's state at one moment."""

    n_trials: int
    counts: dict[TrialState, int]
    best_value: float | None
    best_params: dict[str, Any]
    pareto_size: int
    trials_per_hour: float | None

    @property
    def done(self) -> int:
        return self.counts[TrialState.COMPLETE] + self.counts[TrialState.PRUNED]

    @property
    def eta(self) -> datetime.timedelta | None:
        if not self.trials_per_hour or self.done >= self.n_trials:
            return None
        return datetime.timedelta(hours=(self.n_trials - self.done) / self.trials_per_hour)

    def line(self) -> str:
        """One line: ``12/20 done (3 pruned, 1 failed, 2 running) best 0.1234 ...``."""
        c = self.counts
        text = (
            f"{self.done}/{self.n_trials} done ({c[TrialState.PRUNED]} pruned, "
            f"{c[TrialState.FAIL]} failed, {c[TrialState.RUNNING]} running)"
        )
        if self.best_value is not None:
            text += f"  best {self.best_value:.6g}"
        elif self.pareto_size:
            text += f"  Pareto front: {self.pareto_size} trials"
        if self.trials_per_hour:
            text += f"  {self.trials_per_hour:.0f} trials/h"
        if self.eta is not None:
            text += f"  ETA {str(self.eta).split('.')[0]}"
        return text


def snapshot(study: optuna.Study, n_trials: int) -> Snapshot:
    trials = study.get_trials(deepcopy=False)
    counts = count(trials)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    best_value, best_params, pareto = None, {}, 0
    if counts[TrialState.COMPLETE]:
        if len(study.directions) == 1:
            best = study.best_trial
            best_value, best_params = best.value, best.params
        else:
            pareto = len(study.best_trials)
    return Snapshot(n_trials, counts, best_value, best_params, pareto, _rate(finished))


def _rate(finished: Sequence[optuna.trial.FrozenTrial]) -> float | None:
    times = sorted(t.datetime_complete for t in finished if t.datetime_complete)
    starts = [t.datetime_start for t in finished if t.datetime_start]
    if len(times) < 2 or not starts:
        return None
    hours = (times[-1] - min(starts)).total_seconds() / 3600
    return len(times) / hours if hours > 0 else None


def print_summary(
    console: Console,
    study: optuna.Study,
    n_trials: int,
    paths: dict[str, Path | str],
    target: float | None = None,
) -> None:
    """The end of a run: counts, whether ``target`` was met, the best trial(s), where the results are."""
    snap = snapshot(study, n_trials)
    console.print(snap.line())
    reached = target_trial(study, target)
    if reached is not None:
        console.print(
            f"Target {target} met by trial {reached.number} (value {reached.value:.6g})", highlight=False
        )
    if snap.best_value is not None:
        console.print(f"Best trial {study.best_trial.number}: value {snap.best_value:.6g}", highlight=False)
        table = Table()
        table.add_column("parameter")
        table.add_column("value")
        for name, value in snap.best_params.items():
            table.add_row(name, show(value))
        console.print(table)
    elif snap.pareto_size:
        table = Table(title=f"Pareto front ({snap.pareto_size} trials)")
        table.add_column("trial")
        table.add_column("values")
        table.add_column("parameters")
        for t in study.best_trials:
            values = ", ".join(f"{v:.6g}" for v in t.values)
            table.add_row(str(t.number), values, ", ".join(f"{k}={show(v)}" for k, v in t.params.items()))
        console.print(table)
    else:
        console.print("No trial has completed yet.")
    for label, path in paths.items():
        console.print(f"{label}: {path}")

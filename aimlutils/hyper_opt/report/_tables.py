"""The numbers of a report: trials and run times by state, the top trials, and ``best.yml``."""

from __future__ import annotations

import ast
import dataclasses
import datetime
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from aimlutils.hyper_opt.config import RunConfig
from aimlutils.hyper_opt.objective.base import BaseObjective
from aimlutils.hyper_opt.objective.loader import import_objective_module

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclasses.dataclass(frozen=True)
class StateStats:
    """How many trials are in one state and, for finished states, how long they ran (seconds)."""

    state: str
    count: int
    durations: tuple[float, ...]

    def cells(self) -> list[str]:
        """``state, trials, min, median, mean, max, total`` as text for a table."""
        if not self.durations:
            return [self.state, str(self.count), *[""] * 5]
        d = self.durations
        stats = (min(d), statistics.median(d), statistics.fmean(d), max(d), sum(d))
        return [self.state, str(self.count), *map(seconds, stats)]


def seconds(value: float) -> str:
    """A duration for people: ``12.3 s``, ``4.5 min`` or ``2.1 h``.

    Example:
        >>> seconds(0.25), seconds(270), seconds(7560)
        ('0.25 s', '4.5 min', '2.1 h')
    """
    if value < 60:
        return f"{value:.3g} s"
    if value < 3600:
        return f"{value / 60:.2g} min"
    return f"{value / 3600:.2g} h"


def state_stats(trials: Sequence[FrozenTrial]) -> list[StateStats]:
    """One row per state that has trials: the count, and the run times of finished trials."""
    out = []
    for state in TrialState:
        members = [t for t in trials if t.state == state]
        if not members:
            continue
        durations = tuple(
            (t.datetime_complete - t.datetime_start).total_seconds()
            for t in members
            if state in _FINISHED and t.datetime_start and t.datetime_complete
        )
        out.append(StateStats(state.name, len(members), durations))
    return out


def wall_time(trials: Sequence[FrozenTrial]) -> datetime.timedelta | None:
    """From the first trial's start to the last trial's end (or now, while trials run)."""
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    if any(t.state == TrialState.RUNNING for t in trials):
        ends.append(datetime.datetime.now())
    if not starts or not ends:
        return None
    return max(ends) - min(starts)


def ranked(study: optuna.Study, k: int) -> list[FrozenTrial]:
    """The best ``k`` completed trials; for several objectives, the Pareto front by the first."""
    reverse = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    if len(study.directions) > 1:
        front = study.best_trials
        return sorted(front, key=lambda t: t.values[0], reverse=reverse)[:k]
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(done, key=lambda t: float(t.value or 0.0), reverse=reverse)[:k]


def best_config(cfg: RunConfig, trial: FrozenTrial) -> tuple[dict[str, Any], list[str]]:
    """The model config that trains ``trial`` as its worker did, and notes on what could not be set.

    The values go through :meth:`BaseObjective.update_config`, the code the workers run: colon
    paths first, then ``custom_updates`` from ``objective.py`` when it defines one (imported only
    then, since it may load a training framework). The ``optuna`` section workers add for
    ``custom_updates`` is left out.

    Example::

        conf, notes = best_config(cfg, study.best_trial)
        yaml.safe_dump(conf)
    """
    objective = BaseObjective(None, cfg.model)
    objective.search_space = cfg.space
    objective.optuna_section = dict(cfg.hyper["optuna"])
    notes: list[str] = []
    # A command objective has no custom_updates.
    updates, problem = _custom_updates(cfg.objective) if cfg.objective else (None, None)
    if problem:
        notes.append(problem)
    objective.custom_updates = updates
    fixed = optuna.trial.FixedTrial(dict(trial.params), number=trial.number)
    try:
        conf = objective.update_config(fixed)
    except Exception as err:  # the user's custom_updates: report it, keep the colon-path values
        notes.append(f"custom_updates failed ({type(err).__name__}: {err}); only colon-path values are set")
        objective.custom_updates = None
        conf = objective.update_config(fixed)
    if "optuna" in cfg.model:
        conf["optuna"] = cfg.model["optuna"]
    else:
        conf.pop("optuna", None)
    if updates is None:
        unplaced = [p.name for p in cfg.space.unplaced(cfg.model)]
        if unplaced:
            notes.append(
                f"not in the model config and not set by custom_updates: {', '.join(unplaced)} "
                "(their values are in the file's header)"
            )
    return conf, notes


def _custom_updates(
    objective_path: Path,
) -> tuple[Callable[[Any, dict[str, Any]], Any] | None, str | None]:
    """``custom_updates`` from ``objective.py``, or why it cannot be used here."""
    try:
        tree = ast.parse(objective_path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError) as err:
        return None, f"could not read {objective_path} ({err}); only colon-path values are set"
    if not any(isinstance(n, ast.FunctionDef) and n.name == "custom_updates" for n in tree.body):
        return None, None
    try:
        module = import_objective_module(objective_path)
    except Exception as err:  # e.g. torch missing on a login node: still write the file
        return None, (
            f"custom_updates in {objective_path.name} could not be imported here "
            f"({type(err).__name__}: {err}); only colon-path values are set"
        )
    return getattr(module, "custom_updates", None), None


def write_config(path: Path, conf: Mapping[str, Any], header: Sequence[str]) -> None:
    """Write ``conf`` as YAML under ``#`` comment lines ``header``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    comments = "".join(f"# {line}\n" for line in header)
    path.write_text(comments + yaml.safe_dump(dict(conf), sort_keys=False), encoding="utf-8")


def trial_header(study: optuna.Study, trial: FrozenTrial, metrics: Sequence[str]) -> list[str]:
    """Comment lines naming the study, the trial, its value(s) and parameters."""
    values = ", ".join(f"{m}={v!r}" for m, v in zip(metrics, trial.values or [], strict=False))
    return [
        f"Trial {trial.number} of study {study.study_name!r}: {values}",
        f"Parameters: {dict(trial.params)!r}",
    ]

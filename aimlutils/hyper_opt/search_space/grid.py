"""Grid search: the grid a ``GridSampler`` runs, built from the parameters when not given.

With ``sampler: {type: GridSampler}`` and no ``search_space``, each parameter gives its values:
categorical and value-mode parameters their list, ``int`` ranges every integer (by ``step``),
``float`` ranges with a ``step`` every step. A float range without ``step`` has no finite grid
and is a config error.

Every combination is enqueued once when the study is created, and workers take them from the
queue in order: Optuna's ``GridSampler`` picks a random unvisited point per worker, which repeats
points when workers ask at the same moment.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from aimlutils.hyper_opt.errors import Problem, join_path
from aimlutils.hyper_opt.search_space import Parameter, SearchSpace

GRID_SAMPLER = "GridSampler"


def is_grid(spec: Mapping[str, Any] | None) -> bool:
    """Whether a sampler spec asks for a grid."""
    return isinstance(spec, Mapping) and spec.get("type") == GRID_SAMPLER


def _values(p: Parameter, path: str) -> tuple[list[Any] | None, list[Problem]]:
    dist = p.distribution
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices), []
    if isinstance(dist, IntDistribution):
        return list(range(dist.low, dist.high + 1, dist.step)), []
    if isinstance(dist, FloatDistribution) and dist.step is not None:
        n = math.floor((dist.high - dist.low) / dist.step + 1e-9) + 1
        return [dist.low + i * dist.step for i in range(n)], []
    return None, [
        Problem(
            path,
            f"parameter {p.name!r} is a float range without step ({dist}), which has no finite grid; "
            "give it a step, or use a value mode (multiple, linear, logspace, random)",
        )
    ]


def grid_from_space(
    space: SearchSpace, path: str = "optuna.parameters"
) -> tuple[dict[str, list[Any]], list[Problem]]:
    """``{name: values}`` for a ``GridSampler``, or the parameters that cannot be enumerated.

    Example:
        >>> space, _ = SearchSpace.from_parameters_section(
        ...     {"units": {"type": "multiple", "settings": {"values": [8, 16]}}}
        ... )
        >>> grid_from_space(space)
        ({'units': [8, 16]}, [])
    """
    grid: dict[str, list[Any]] = {}
    problems: list[Problem] = []
    for p in space.parameters:
        key = ":".join(p.target) if p.target is not None else p.name
        values, found = _values(p, join_path(path, key))
        problems += found
        if values is not None:
            grid[p.name] = values
    if not space.parameters:
        problems.append(
            Problem("optuna.sampler", "GridSampler needs parameters to enumerate; optuna.parameters is empty")
        )
    return grid, problems


def with_grid(spec: Mapping[str, Any], space: SearchSpace) -> dict[str, Any]:
    """``spec`` with a ``search_space`` built from ``space`` when it is a grid without one."""
    out = dict(spec)
    if is_grid(out) and "search_space" not in out:
        out["search_space"], _ = grid_from_space(space)
    return out


def combinations(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every point of a grid spec's ``search_space``, in a fixed order."""
    grid: Mapping[str, Sequence[Any]] = spec.get("search_space") or {}
    names = list(grid)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*(grid[n] for n in names))]


def enqueue_combinations(study: optuna.Study, spec: Mapping[str, Any]) -> int:
    """Queue each grid point no trial has taken yet; returns how many were queued.

    A point counts as taken by a finished, running or waiting trial; one whose trials all failed
    is queued again, so a reloaded study completes its grid.
    """
    taken = set()
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    for t in study.get_trials(deepcopy=False, states=states):
        params = t.system_attrs.get("fixed_params") or t.params
        taken.add(_key(params))
    queued = 0
    for point in combinations(spec):
        if _key(point) not in taken:
            study.enqueue_trial(point)
            queued += 1
    return queued


def _key(params: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    # repr keeps 1 and 1.0 and True apart, as the grid does.
    return tuple(sorted((k, repr(v)) for k, v in params.items()))

"""Samplers and pruners by Optuna class name, with their keyword arguments checked up front."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import optuna

from aimlutils.hyper_opt.errors import Problem, format_value, join_path

# Keyword arguments that take another sampler/pruner, given in YAML as a nested {type: ...}.
_NESTED = {"base_sampler": "sampler", "wrapped_pruner": "pruner"}


def _classes(module: Any, base: type) -> dict[str, type]:
    return {
        name: obj
        for name in module.__all__
        if inspect.isclass(obj := getattr(module, name))
        and issubclass(obj, base)
        and not inspect.isabstract(obj)
        and not name.startswith("Base")
    }


SAMPLERS: dict[str, type] = _classes(optuna.samplers, optuna.samplers.BaseSampler)
PRUNERS: dict[str, type] = _classes(optuna.pruners, optuna.pruners.BasePruner)


def _accepted_kwargs(cls: type) -> dict[str, inspect.Parameter]:
    params = inspect.signature(cls).parameters
    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return {n: p for n, p in params.items() if p.kind not in skip}


def build(kind: str, spec: Mapping[str, Any], path: str) -> tuple[Any, list[Problem]]:
    """Build a sampler (``kind="sampler"``) or pruner from ``{type: Name, **kwargs}``.

    Returns the object, or ``None`` and the problems (unknown class, unknown or missing keyword
    argument, a value Optuna refuses), each under ``path``.
    """
    registry = SAMPLERS if kind == "sampler" else PRUNERS
    name = spec.get("type")
    if name not in registry:
        allowed = ", ".join(sorted(registry))
        return None, [
            Problem(join_path(path, "type"), f"got {format_value(name)}; allowed {kind}s: {allowed}")
        ]
    cls = registry[str(name)]
    accepted = _accepted_kwargs(cls)
    kwargs = {k: v for k, v in spec.items() if k != "type"}
    problems = [
        Problem(
            join_path(path, key),
            f"{name} has no argument {key!r}; allowed: {', '.join(accepted) or '(none)'}",
        )
        for key in kwargs
        if key not in accepted
    ]
    problems += [
        Problem(join_path(path, key), f"{name} needs this argument")
        for key, p in accepted.items()
        if p.default is inspect.Parameter.empty and key not in kwargs
    ]
    for key, nested_kind in _NESTED.items():
        if isinstance(kwargs.get(key), Mapping):
            kwargs[key], nested = build(nested_kind, kwargs[key], join_path(path, key))
            problems += nested
    if problems:
        return None, problems
    try:
        return cls(**kwargs), []
    except (TypeError, ValueError, ImportError) as err:
        return None, [Problem(path, f"{name}({_show(kwargs)}) was refused by Optuna: {err}")]


def _show(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={format_value(v)}" for k, v in kwargs.items())


#: From this many workers on, TPE samples each parameter on its own (``multivariate: false``)
#: unless told otherwise. Measured on Hartmann6, 256 trials, 10 seeds (docs/benchmarks.md, "Search
#: quality against worker count"): at 32 workers independent TPE ended with a median regret of
#: 0.128 against multivariate TPE's 0.288 (1 sequential worker: 0.133); at 16 the two were even
#: (0.146, 0.134); at 8 multivariate was ahead (0.085, 0.112).
INDEPENDENT_TPE_WORKERS = 16


def sampler_spec(spec: Mapping[str, Any] | None, n_workers: int, worker_index: int = 0) -> dict[str, Any]:
    """The sampler spec a worker uses: TPE by default, tuned to the number of workers.

    With several workers TPE gets ``constant_liar`` (running trials count as bad, so workers
    spread out), and from :data:`INDEPENDENT_TPE_WORKERS` workers on ``multivariate: false``;
    either stays as given when set (or ``multivariate`` when ``group`` is, which needs it). A
    user-given ``seed`` is offset by the worker index: workers with one seed would otherwise draw
    the same parameters.

    >>> sampler_spec(None, 32)
    {'type': 'TPESampler', 'constant_liar': True, 'multivariate': False}
    """
    out = dict(spec or {"type": "TPESampler"})
    if out.get("type") == "TPESampler" and n_workers > 1:
        out.setdefault("constant_liar", True)
        if n_workers >= INDEPENDENT_TPE_WORKERS and not out.get("group"):
            out.setdefault("multivariate", False)
    if isinstance(out.get("seed"), int):
        out["seed"] = out["seed"] + worker_index
    return out


def pruner_spec(spec: Mapping[str, Any] | None) -> dict[str, Any]:
    """The pruner spec: no pruning unless asked for, as in the original package."""
    return dict(spec or {"type": "NopPruner"})

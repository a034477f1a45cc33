"""Hyperparameters as value objects: an Optuna name, a distribution, and where the value goes.

Every front-end (the ``optuna.parameters`` section today) turns its own syntax into
:class:`Parameter` objects, so the workers, samplers and reports never see the syntax.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aimlutils.hyper_opt.errors import Problem, join_path, pydantic_problems
from aimlutils.hyper_opt.search_space.value_modes import VALUE_MODES, expand_values

#: The model-config location of a value: ``("optimizer", "learning_rate")``.
KeyPath = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One tunable value.

    Attributes:
        name: The Optuna parameter name (``trial.params[name]``).
        distribution: Where values are drawn from.
        target: Where the value is written in the model config, or ``None`` when only
            ``custom_updates`` uses it.
        scale_by: A model-config location whose value (after the parameters before this one
            are applied) multiplies the suggestion before it is written; ``None`` writes the
            suggestion itself. Set by inline markers with ``dependency: multiply``.

    Example:
        >>> p = Parameter("lr", FloatDistribution(1e-5, 1e-2, log=True), ("optimizer", "lr"))
        >>> p.suggest(optuna.trial.FixedTrial({"lr": 1e-3}))
        0.001
    """

    name: str
    distribution: BaseDistribution
    target: KeyPath | None = None
    scale_by: KeyPath | None = None

    def suggest(self, trial: optuna.trial.BaseTrial) -> Any:
        """Ask ``trial`` for this parameter's value through Optuna's public suggest API."""
        dist = self.distribution
        if isinstance(dist, FloatDistribution):
            return trial.suggest_float(self.name, dist.low, dist.high, step=dist.step, log=dist.log)
        if isinstance(dist, IntDistribution):
            return trial.suggest_int(self.name, dist.low, dist.high, step=dist.step, log=dist.log)
        if isinstance(dist, CategoricalDistribution):
            return trial.suggest_categorical(self.name, dist.choices)
        raise TypeError(f"unsupported distribution {dist!r} for parameter {self.name!r}")


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None


class _RangeSettings(_Settings):
    low: float
    high: float


class _FloatSettings(_RangeSettings):
    step: float | None = Field(default=None, gt=0)
    log: bool = False


class _IntSettings(_Settings):
    low: int
    high: int
    step: int = Field(default=1, ge=1)
    log: bool = False


class _DiscreteUniformSettings(_RangeSettings):
    q: float = Field(gt=0)


class _CategoricalSettings(_Settings):
    choices: list[bool | int | float | str | None] = Field(min_length=1)


_SETTINGS: dict[str, type[_Settings]] = {
    "categorical": _CategoricalSettings,
    "discrete_uniform": _DiscreteUniformSettings,
    "float": _FloatSettings,
    "int": _IntSettings,
    "loguniform": _RangeSettings,
    "uniform": _RangeSettings,
}

#: Parameter types accepted in ``optuna.parameters.<key>.type``.
PARAMETER_TYPES = tuple(sorted((*_SETTINGS, *VALUE_MODES)))


def _range_problems(s: _RangeSettings | _IntSettings, path: str, log: bool) -> list[Problem]:
    problems = []
    if s.low > s.high:
        problems.append(
            Problem(
                join_path(path, "low"),
                f"low ({s.low!r}) is greater than high ({s.high!r}); low must be <= high",
            )
        )
    if log and s.low <= 0:
        problems.append(
            Problem(
                join_path(path, "low"),
                f"got {s.low!r}; a log-scaled range needs low > 0",
            )
        )
    return problems


def _distribution(kind: str, s: Any) -> BaseDistribution:
    # The three deprecated Optuna types map onto suggest_float, as Optuna itself does.
    if kind == "categorical":
        return CategoricalDistribution(s.choices)
    if kind == "int":
        return IntDistribution(s.low, s.high, step=s.step, log=s.log)
    if kind == "float":
        return FloatDistribution(s.low, s.high, step=s.step, log=s.log)
    if kind == "uniform":
        return FloatDistribution(s.low, s.high)
    if kind == "loguniform":
        return FloatDistribution(s.low, s.high, log=True)
    return FloatDistribution(s.low, s.high, step=s.q)  # discrete_uniform


def _settings_problems(kind: str, s: Any, path: str) -> list[Problem]:
    if kind == "categorical":
        return []
    log = bool(getattr(s, "log", False)) or kind == "loguniform"
    problems = _range_problems(s, path, log)
    step = getattr(s, "step", None)
    if getattr(s, "log", False) and step not in (None, 1):
        problems.append(
            Problem(
                join_path(path, "step"),
                f"got {step!r} together with log: true; use either step or log, not both",
            )
        )
    return problems


def parameter_from_settings(
    kind: str, settings: Mapping[str, Any], path: str, default_name: str
) -> tuple[Parameter | None, list[Problem]]:
    """Build a :class:`Parameter` from a ``{type, settings}`` entry, or say what is wrong.

    ``path`` is the entry's key path, used in every problem. The target is left unset; the
    front-end decides where the value goes.
    """
    if kind in VALUE_MODES:
        # A value mode is a categorical parameter over the values it lists.
        name, values, problems = expand_values(kind, settings, join_path(path, "settings"))
        if values is None:
            return None, problems
        return Parameter(name or default_name, CategoricalDistribution(values)), []
    model = _SETTINGS.get(kind)
    if model is None:
        allowed = ", ".join(PARAMETER_TYPES)
        return None, [Problem(join_path(path, "type"), f"got {kind!r}; allowed types: {allowed}")]
    settings_path = join_path(path, "settings")
    try:
        parsed = model.model_validate(dict(settings))
    except ValidationError as err:
        return None, pydantic_problems(err, settings_path, lambda _: list(model.model_fields), dict(settings))
    problems = _settings_problems(kind, parsed, settings_path)
    if problems:
        return None, problems
    try:
        distribution = _distribution(kind, parsed)
    except ValueError as err:  # Optuna's own checks, e.g. a step larger than the range
        return None, [Problem(settings_path, str(err))]
    return Parameter(parsed.name or default_name, distribution), []


def suggest_from_spec(trial: optuna.trial.BaseTrial, spec: Mapping[str, Any]) -> Any:
    """Suggest a value for one ``{type: ..., settings: {...}}`` entry of ``optuna.parameters``.

    Handy in ``custom_updates`` for parameters that are not placed automatically.

    Example:
        >>> trial = optuna.trial.FixedTrial({"num_dense": 2})
        >>> spec = {"type": "int", "settings": {"name": "num_dense", "low": 0, "high": 4}}
        >>> suggest_from_spec(trial, spec)
        2
    """
    kind = spec.get("type", "")
    settings = spec.get("settings", {})
    parameter, problems = parameter_from_settings(kind, settings, "parameter", str(settings.get("name", "")))
    if parameter is None:
        raise ValueError("; ".join(str(p) for p in problems))
    return parameter.suggest(trial)

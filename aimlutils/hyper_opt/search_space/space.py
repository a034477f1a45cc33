"""A study's search space: the parameters, how to ask a trial for them, where they go."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

import optuna
from optuna.distributions import BaseDistribution

from aimlutils.hyper_opt.errors import Problem, format_value, join_path
from aimlutils.hyper_opt.search_space.model_config import get_value, locate, set_value, split_colon_path
from aimlutils.hyper_opt.search_space.params import Parameter, parameter_from_settings


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The parameters of a study, in the order they are suggested.

    Example:
        >>> space, problems = SearchSpace.from_parameters_section(
        ...     {"optimizer:lr": {"type": "float", "settings": {"name": "lr", "low": 0.0, "high": 1.0}}}
        ... )
        >>> conf = {"optimizer": {"lr": 0.1}}
        >>> space.apply(conf, {"lr": 0.5})["optimizer"]["lr"]
        0.5
    """

    parameters: tuple[Parameter, ...] = ()

    @classmethod
    def from_parameters_section(
        cls, section: Mapping[str, Any], prefix: str = "optuna.parameters"
    ) -> tuple[SearchSpace, list[Problem]]:
        """Read the seed's ``parameters: {key: {type, settings}}`` format.

        The key is the model-config location (colon path); ``settings.name`` the Optuna name.
        """
        parameters: list[Parameter] = []
        problems: list[Problem] = []
        for key, spec in section.items():
            path = join_path(prefix, key)
            if not isinstance(spec, Mapping):
                problems.append(
                    Problem(
                        path, f"got {format_value(spec)}; a parameter is {{type: ..., settings: {{...}}}}"
                    )
                )
                continue
            settings = spec.get("settings", {})
            if not isinstance(settings, Mapping):
                problems.append(
                    Problem(
                        join_path(path, "settings"),
                        f"got {format_value(settings)}; settings is a mapping such as "
                        "{name: lr, low: 0.001, high: 0.1}",
                    )
                )
                continue
            if "" in split_colon_path(str(key)):
                problems.append(
                    Problem(
                        path, "a colon path has an empty part (as in 'optimizer::lr'); write 'optimizer:lr'"
                    )
                )
                continue
            parameter, found = parameter_from_settings(spec.get("type", ""), settings, path, default_name=key)
            problems += found
            if parameter is not None:
                parameters.append(dataclasses.replace(parameter, target=split_colon_path(key)))
        problems += _duplicate_names(parameters, prefix)
        return cls(tuple(parameters)), problems

    @property
    def distributions(self) -> dict[str, BaseDistribution]:
        return {p.name: p.distribution for p in self.parameters}

    def suggest(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        """Ask ``trial`` for every parameter; returns ``{name: value}``."""
        return {p.name: p.suggest(trial) for p in self.parameters}

    def check_targets(self, conf: Mapping[str, Any], prefix: str = "optuna.parameters") -> list[Problem]:
        """Problems with colon paths that run through a value that is not a mapping."""
        problems = []
        for p in self.parameters:
            if p.target is None:
                continue
            _, problem = locate(conf, p.target)
            if problem:
                problems.append(Problem(join_path(prefix, ":".join(p.target)), problem))
        return problems

    def unplaced(self, conf: Mapping[str, Any]) -> list[Parameter]:
        """Parameters whose key is not in the model config (left to ``custom_updates``)."""
        return [p for p in self.parameters if p.target is None or not locate(conf, p.target)[0]]

    def apply(self, conf: MutableMapping[str, Any], values: Mapping[str, Any]) -> MutableMapping[str, Any]:
        """Write each value whose key exists in ``conf``; returns ``conf``.

        Parameters are written in order, so a ``scale_by`` location already holds its applied value
        when a later parameter is multiplied by it.
        """
        for p in self.parameters:
            if p.target is not None and p.name in values and locate(conf, p.target)[0]:
                value = values[p.name]
                if p.scale_by is not None:
                    value = value * get_value(conf, p.scale_by)
                set_value(conf, p.target, value)
        return conf

    def applied_values(self, conf: Mapping[str, Any]) -> dict[str, Any]:
        """``{name: value written}`` for the parameters whose written value is not the suggestion."""
        return {
            p.name: get_value(conf, p.target)
            for p in self.parameters
            if p.scale_by is not None and p.target is not None and locate(conf, p.target)[0]
        }

    def extended(self, parameters: Iterable[Parameter], where: str = "") -> tuple[SearchSpace, list[Problem]]:
        """This space with ``parameters`` after its own, for a second front-end (inline markers).

        A parameter whose name or model-config location one of this space's parameters already
        has is defined twice: a problem at ``where.<name>.hyper_opt``, and it is left out.
        """
        names = {p.name: p for p in self.parameters}
        targets = {p.target: p for p in self.parameters if p.target is not None}
        kept: list[Parameter] = []
        problems = []
        for p in parameters:
            first = names.get(p.name) or (targets.get(p.target) if p.target is not None else None)
            if first is None:
                kept.append(p)
                continue
            key = ":".join(first.target or ()) or first.name
            problems.append(
                Problem(
                    join_path(where, p.name, "hyper_opt"),
                    f"also defined as optuna.parameters.{key} (name {first.name!r}); define it in one place",
                )
            )
        return SearchSpace(self.parameters + tuple(kept)), problems


def _duplicate_names(parameters: Iterable[Parameter], prefix: str) -> list[Problem]:
    seen: dict[str, Parameter] = {}
    problems = []
    for p in parameters:
        if p.name in seen:
            first = ":".join(seen[p.name].target or ())
            problems.append(
                Problem(
                    join_path(prefix, ":".join(p.target or ()), "settings", "name"),
                    f"{p.name!r} is already the name of parameter {first!r}; "
                    "each parameter needs its own name",
                )
            )
        seen[p.name] = p
    return problems

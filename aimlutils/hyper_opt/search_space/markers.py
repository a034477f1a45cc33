"""Inline markers: a value of ``model.yml`` replaced by the way to tune it.

A marker is a mapping with the single key ``hyper_opt``::

    model:
      num_transformer_heads: 4
      transformer_hidden_size:
        hyper_opt:
          suggest: int
          params: {low: 2, high: 8, step: 2}
          depends_on: model.num_transformer_heads
          dependency: multiply

The parameter's name is the dotted key path (``model.transformer_hidden_size``) and its value is
written back at that place. With ``depends_on`` the value written is the suggestion times the value
at the other path, either another marker (after its own dependency) or a fixed value of the model
config, so the hidden size above is always a multiple of the head count. ``dependency`` may be left
out; ``multiply`` is the only one.

What is recorded where: ``trial.params`` holds the suggestion (2..8 above), the value Optuna's
samplers work with; the value written into the model config (suggestion x head count) is stored in
the trial's ``applied`` user attribute and the ``applied.<name>`` column of the results CSV.

Example:
    >>> model = {"heads": 4, "hidden": {"hyper_opt": {"suggest": "int", "params": {"low": 2, "high": 8},
    ...                                               "depends_on": "heads", "dependency": "multiply"}}}
    >>> params, problems = parameters_from_markers(model)
    >>> [(p.name, p.target, p.scale_by) for p in params], problems
    ([('hidden', ('hidden',), ('heads',))], [])
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Iterator, Mapping
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution

from aimlutils.hyper_opt.errors import Problem, format_value, join_path
from aimlutils.hyper_opt.search_space.model_config import get_value, locate
from aimlutils.hyper_opt.search_space.params import (
    PARAMETER_TYPES,
    KeyPath,
    Parameter,
    parameter_from_settings,
)

#: The key that turns a model-config value into a marker.
MARKER_KEY = "hyper_opt"
#: Keys allowed inside a marker.
MARKER_KEYS = ("suggest", "params", "depends_on", "dependency")
#: How a dependent value is combined with the value it depends on.
DEPENDENCIES = ("multiply",)


@dataclasses.dataclass(frozen=True)
class _Marker:
    path: KeyPath
    spec: Mapping[str, Any]

    @property
    def name(self) -> str:
        return ".".join(self.path)

    @property
    def key_path(self) -> str:
        return join_path(self.name, MARKER_KEY)


def is_marker(value: Any) -> bool:
    """Whether a model-config value is a ``{hyper_opt: ...}`` marker."""
    return isinstance(value, Mapping) and MARKER_KEY in value


def find_markers(conf: Mapping[str, Any], path: KeyPath = ()) -> Iterator[tuple[KeyPath, Any]]:
    """Every marker of ``conf`` as ``(key path, marker mapping)``, in file order.

    Only mappings are searched: a value written back by key path cannot sit inside a list.
    """
    for key, value in conf.items():
        here = (*path, str(key))
        if is_marker(value):
            yield here, value
        elif isinstance(value, Mapping):
            yield from find_markers(value, here)


def has_markers(conf: Mapping[str, Any]) -> bool:
    return next(find_markers(conf), None) is not None


def parameters_from_markers(conf: Mapping[str, Any]) -> tuple[list[Parameter], list[Problem]]:
    """The parameters of every marker in ``conf``, in dependency order, or what is wrong.

    Problems carry the marker's key path, e.g. ``model.hidden.hyper_opt.depends_on``.
    """
    markers: dict[str, _Marker] = {}
    parameters: dict[str, Parameter] = {}
    problems: list[Problem] = []
    for path, value in find_markers(conf):
        marker = _Marker(path, value)
        markers[marker.name] = marker
        parameter, found = _parameter(marker)
        problems += found
        if parameter is not None:
            parameters[marker.name] = parameter
    depends: dict[str, str] = {}
    for name, marker in markers.items():
        on = (
            marker.spec[MARKER_KEY].get("depends_on")
            if isinstance(marker.spec[MARKER_KEY], Mapping)
            else None
        )
        if on is None or name not in parameters:
            continue
        scale_by, found = _dependency_target(marker, str(on), conf, markers, parameters)
        problems += found
        if scale_by is not None:
            parameters[name] = dataclasses.replace(parameters[name], scale_by=scale_by)
            if str(on) in markers:
                depends[name] = str(on)
    order, found = _dependency_order(list(parameters), depends, markers)
    return [parameters[name] for name in order], problems + found


def _parameter(marker: _Marker) -> tuple[Parameter | None, list[Problem]]:
    body, at = marker.spec[MARKER_KEY], marker.key_path
    if len(marker.spec) > 1:
        others = ", ".join(sorted(str(k) for k in marker.spec if k != MARKER_KEY))
        return None, [Problem(marker.name, f"a marker holds only '{MARKER_KEY}'; move {others} out of it")]
    if not isinstance(body, Mapping):
        return None, [Problem(at, f"got {format_value(body)}; a marker is a mapping with keys {_allowed()}")]
    problems = [
        Problem(join_path(at, key), f"unknown key; allowed here: {_allowed()}")
        for key in body
        if key not in MARKER_KEYS
    ]
    kind, params = body.get("suggest"), body.get("params", {})
    if kind is None:
        problems.append(Problem(join_path(at, "suggest"), f"required key is missing; one of {_types()}"))
    elif kind not in PARAMETER_TYPES:
        problems.append(Problem(join_path(at, "suggest"), f"got {format_value(kind)}; allowed: {_types()}"))
    if not isinstance(params, Mapping):
        problems.append(Problem(join_path(at, "params"), f"got {format_value(params)}; must be a mapping"))
    elif "name" in params:
        problems.append(
            Problem(join_path(at, "params", "name"), f"a marker's name is its key path ({marker.name!r})")
        )
    dependency = body.get("dependency")
    if dependency is not None and body.get("depends_on") is None:
        problems.append(Problem(join_path(at, "dependency"), "needs depends_on: the path it depends on"))
    elif dependency is not None and dependency not in DEPENDENCIES:
        allowed = ", ".join(DEPENDENCIES)
        problems.append(
            Problem(join_path(at, "dependency"), f"got {format_value(dependency)}; allowed: {allowed}")
        )
    if problems:
        return None, problems
    parameter, found = parameter_from_settings(str(kind), params, at, default_name=marker.name)
    # parameter_from_settings speaks the parameters section's words (type/settings); say ours.
    found = [dataclasses.replace(p, path=_marker_words(p.path, at)) for p in found]
    if parameter is None:
        return None, found
    return dataclasses.replace(parameter, target=marker.path), found


def _marker_words(path: str, at: str) -> str:
    for ours, theirs in (("suggest", "type"), ("params", "settings")):
        if path == join_path(at, theirs) or path.startswith(join_path(at, theirs) + "."):
            return join_path(at, ours) + path[len(join_path(at, theirs)) :]
    return path


def _dependency_target(
    marker: _Marker,
    on: str,
    conf: Mapping[str, Any],
    markers: Mapping[str, _Marker],
    parameters: Mapping[str, Parameter],
) -> tuple[KeyPath | None, list[Problem]]:
    """Where the value that multiplies ``marker``'s suggestion lives, or why it cannot be used."""
    at = join_path(marker.key_path, "depends_on")
    if not _numeric(parameters[marker.name].distribution):
        return None, [Problem(at, "only a numeric suggestion can be multiplied; this one has text choices")]
    if on in markers:
        other = parameters.get(on)
        if other is not None and not _numeric(other.distribution):
            return None, [Problem(at, f"{on!r} has text choices; it cannot multiply another value")]
        return markers[on].path, []
    path = tuple(on.split("."))
    inside_marker = any(".".join(path[:i]) in markers for i in range(1, len(path)))
    found, _ = locate(conf, path)
    if not found or inside_marker:
        known = ", ".join(markers) or "(none)"
        return None, [
            Problem(
                at,
                f"{on!r} is neither a marker nor a value of the model config (dotted key path); "
                f"markers: {known}",
            )
        ]
    value = get_value(conf, path)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None, [Problem(at, f"{on!r} is {format_value(value)}; multiply needs a number")]
    return path, []


def _dependency_order(
    names: list[str], depends: Mapping[str, str], markers: Mapping[str, _Marker]
) -> tuple[list[str], list[Problem]]:
    """``names`` with every marker after the one it depends on; cycles are problems."""
    order: list[str] = []
    state: dict[str, str] = {}  # "visiting" while on the current chain, "done" once placed
    problems: list[Problem] = []

    def visit(name: str, chain: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = [*chain[chain.index(name) :], name]
            problems.append(
                Problem(
                    join_path(markers[name].key_path, "depends_on"),
                    f"depends_on forms a cycle: {' -> '.join(cycle)}; one of them must not depend on another",
                )
            )
            return
        state[name] = "visiting"
        if name in depends and depends[name] in names:
            visit(depends[name], [*chain, name])
        state[name] = "done"
        order.append(name)

    for name in names:
        visit(name, [])
    return order, problems


def _numeric(distribution: BaseDistribution) -> bool:
    if isinstance(distribution, CategoricalDistribution):
        return all(isinstance(c, numbers.Real) and not isinstance(c, bool) for c in distribution.choices)
    return True


def _allowed() -> str:
    return ", ".join(MARKER_KEYS)


def _types() -> str:
    return ", ".join(PARAMETER_TYPES)

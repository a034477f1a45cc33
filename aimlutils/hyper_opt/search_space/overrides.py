"""Command-line overrides in the grammar of the Hydra Optuna sweeper: ``key=value`` and ``key=sweep``.

::

    override := key "=" (sweep | items | plain)
    sweep    := "interval(" number "," number ")"                  arguments may be named start=, end=
              | "range(" number ["," number] ["," number] ")"       named start=, stop=, step=
              | "choice(" item {"," item} ")"
              | "shuffle(" (choice | range | item {"," item}) ")"
              | ("int" | "float") "(" sweep ")"
              | "tag(" tag {"," tag} "," sweep ")"                  tag: log
    items    := item "," item {"," item}                            a choice, as Hydra's a,b,c
    item     := a quoted string, or text up to the next "," or ")"

Each sweep becomes the distribution the Hydra Optuna sweeper builds from it (its
``create_optuna_distribution_from_override``), so a command line pasted from there searches the
same space:

- ``interval(a, b)`` is a float range from ``a`` to ``b`` (Hydra makes both bounds floats);
  ``int(interval(a, b))`` an int range; ``tag(log, ...)`` makes either log-scaled.
- ``range(start, stop, step=1)`` is ``IntDistribution(start, stop, step=step)`` (a float range with
  that step if any of the three is a float): Optuna's bounds include ``stop``, unlike Python's
  ``range``, and a ``stop`` off the step grid is lowered to the last grid point, as Optuna does.
  ``range(n)`` is ``range(0, n)``.
- ``choice(...)`` and ``a,b,c`` are categorical. ``shuffle(range(...))`` is categorical over the
  values Hydra's range iterates, which exclude ``stop``, as the sweeper does.

``plain`` and ``item`` are read as numbers where Python reads them as numbers (``1e-5``), else as
YAML scalars (``relu``, ``true``, ``[1, 2]``).

A key starting with ``optuna.``, ``slurm.``, ``pbs.``, ``log.`` or ``save_path`` is a dotted path into
``hyper.yml`` and takes a plain value (commas included: ``slurm.batch.mail-type=END,FAIL``). A key
starting with ``hydra.`` or ``hydra/`` is a setting of the Hydra Optuna sweeper, mapped onto the
``optuna`` section by :mod:`aimlutils.hyper_opt.search_space.sweeper_keys`. Any other key is a
model-config path (colons, or dots when it has no colon): a sweep there adds or replaces the
parameter at that place (an entry of ``optuna.parameters``, or the inline marker found there), a
plain value fixes the value for the run and drops any parameter at that place.

Example:
    >>> hyper, model = {"optuna": {"parameters": {}}}, {"optimizer": {"lr": 0.1}}
    >>> problems = apply_overrides(hyper, model, ["optimizer:lr=tag(log, interval(1e-5, 1e-3))"])
    >>> problems, hyper["optuna"]["parameters"]["optimizer:lr"]["settings"]
    ([], {'name': 'optimizer:lr', 'low': 1e-05, 'high': 0.001, 'log': True})
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aimlutils.hyper_opt.errors import Problem
from aimlutils.hyper_opt.search_space import sweeper_keys
from aimlutils.hyper_opt.search_space.markers import MARKER_KEY, is_marker
from aimlutils.hyper_opt.search_space.model_config import get_value, locate, set_value
from aimlutils.hyper_opt.search_space.params import parameter_from_settings
from aimlutils.hyper_opt.search_space.sweep_grammar import (
    Override,
    OverrideSyntaxError,
    hyper_prefixes,
    parse_override,
    scalar,
)

__all__ = ["Override", "OverrideSyntaxError", "apply_overrides", "hyper_prefixes", "parse_override", "scalar"]


def apply_overrides(hyper: dict[str, Any], model: dict[str, Any], texts: Sequence[str]) -> list[Problem]:
    """Apply each override in order to ``hyper`` and ``model`` (in place); returns the problems.

    Config-group choices (``hydra/sweeper/sampler=random``) come first, as Hydra applies them
    before any value.
    """
    problems: list[Problem] = []
    written: list[tuple[str, ...]] = []
    sources: list[str] = []
    for text in sorted(texts, key=lambda t: not t.lstrip().startswith("hydra/")):
        try:
            override = parse_override(text)
        except OverrideSyntaxError as err:
            problems.append(Problem("", f"override {text!r}: {err}"))
            continue
        if sweeper_keys.is_sweeper_key(override.key):
            before = len(written)
            problem = sweeper_keys.apply(
                override.key, override.value, override.kind is not None, hyper, written
            )
            sources += [text] * (len(written) - before)
        else:
            problem = _apply(override, hyper, model)
        if problem:
            problems.append(Problem("", f"override {text!r}: {problem}"))
    return problems + sweeper_keys.resolve_interpolations(hyper, model, written, sources)


def _apply(o: Override, hyper: dict[str, Any], model: dict[str, Any]) -> str | None:
    dotted = tuple(o.key.split("."))
    if dotted[0] in hyper_prefixes():
        if o.kind is not None:
            return f"{o.key} is a hyper.yml setting; it takes a plain value, not a sweep"
        return _set_creating(hyper, dotted, o.value)
    path = tuple(o.key.split(":")) if ":" in o.key else dotted
    found, problem = locate(model, path)
    if problem:
        return problem
    section = _parameters(hyper)
    colon_key = ":".join(path)
    if o.kind is None:
        if not found:
            return f"{o.key} is not in the model config; check the spelling"
        set_value(model, path, o.value)
        section.pop(colon_key, None)  # fixed for this run: no parameter may overwrite it
        return None
    # Replacing an entry keeps its Optuna name, so enqueued trials and reports still match it.
    existing = section.get(colon_key)
    settings = existing.get("settings") if isinstance(existing, dict) else None
    name = str(settings.get("name") or o.key) if isinstance(settings, dict) else o.key
    parameter, found_problems = parameter_from_settings(o.kind, {**o.settings, "name": name}, "", name)
    if parameter is None:
        return "; ".join(p.message for p in found_problems)
    if found and is_marker(get_value(model, path)):
        # The marker keeps its depends_on; only how its value is drawn changes.
        body = get_value(model, path)[MARKER_KEY]
        body.update(suggest=o.kind, params=dict(o.settings))
        return None
    section[colon_key] = {"type": o.kind, "settings": {"name": name, **o.settings}}
    return None


def _parameters(hyper: dict[str, Any]) -> dict[str, Any]:
    optuna_section = hyper.setdefault("optuna", {})
    if not isinstance(optuna_section, dict):
        return {}  # the schema reports it
    section = optuna_section.setdefault("parameters", {})
    return section if isinstance(section, dict) else {}


def _set_creating(conf: dict[str, Any], path: tuple[str, ...], value: Any) -> str | None:
    node: Any = conf
    for depth, key in enumerate(path[:-1]):
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            return f"{'.'.join(path[: depth + 1])} is {node!r}, not a mapping"
    node[path[-1]] = value
    return None

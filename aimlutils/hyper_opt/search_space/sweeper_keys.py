"""Overrides of the Hydra Optuna sweeper's own settings, mapped onto the ``optuna`` section.

A command line pasted from that sweeper sets the study with ``hydra.sweeper.<key>=value`` and
chooses plugins with ``hydra/<group>=<name>``. Those with a counterpart in ``hyper.yml`` change it:

========================================  ==============================================
``hydra.sweeper.n_trials``                ``optuna.n_trials``
``hydra.sweeper.study_name``              ``optuna.name`` (``optuna.study_name`` where the file uses it)
``hydra.sweeper.storage``                 ``optuna.storage`` (``null``: the default journal file)
``hydra.sweeper.direction``               ``optuna.direction``
``hydra.sweeper.sampler.<argument>``      ``optuna.sampler.<argument>`` (``seed``, ``n_startup_trials``, ...)
``hydra.sweeper.sampler._target_``        ``optuna.sampler.type`` (``optuna.samplers.<Name>``)
``hydra/sweeper/sampler=<name>``          ``optuna.sampler: {type: <Name>}`` (``tpe``, ``random``, ...)
``hydra.sweeper.n_jobs``                  the number of local workers, as ``--workers``
========================================  ==============================================

``hydra/sweeper=optuna`` and ``hydra/launcher=<any>`` are accepted and have no effect here; every
other ``hydra`` key is refused with a message that says why. Values may interpolate the model
config as Hydra does (``hydra.sweeper.study_name='${experiment_id}'``); they are resolved after
every override is applied, so the order of the overrides does not matter, as in Hydra.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from aimlutils.hyper_opt.errors import Problem, format_value
from aimlutils.hyper_opt.search_space import samplers

#: Config groups whose choice makes no difference here: there is one sweeper, and workers are
#: started by ``optimize.py`` itself.
NO_EFFECT_GROUPS = ("hydra/sweeper", "hydra/launcher")

# The sampler groups the Hydra Optuna sweeper registers, by the Optuna class each one builds.
_SAMPLER_GROUPS = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "cmaes": "CmaEsSampler",
    "nsgaii": "NSGAIISampler",
    "nsgaiii": "NSGAIIISampler",
    "qmc": "QMCSampler",
    "gp": "GPSampler",
    "grid": "GridSampler",
}
SAMPLER_GROUPS = {k: v for k, v in _SAMPLER_GROUPS.items() if v in samplers.SAMPLERS}

_MAPPED = "n_trials, study_name, storage, direction, n_jobs, sampler.<argument>"
_UNDERSTOOD = (
    f"hydra.sweeper.<key> for {_MAPPED}; hydra/sweeper/sampler=<name>; "
    "hydra/sweeper=optuna and hydra/launcher=<name> (no effect)"
)

# Keys of the sweeper with nothing to map onto, and what to use here instead.
_NO_COUNTERPART = {
    "max_failure_rate": "a failed trial is recorded FAIL and the study goes on (failed trials do "
    "not count towards n_trials)",
    "params": "give each parameter as its own override (key=interval(...)) or in optuna.parameters",
    "search_space": "give each parameter as its own override (key=interval(...)) or in optuna.parameters",
    "custom_search_space": "suggest further values in custom_updates(trial, conf) of objective.py",
    "_target_": "optimize.py always runs its own Optuna study",
    "defaults": "choose the sampler with hydra/sweeper/sampler=<name>",
}

_INTERPOLATION = re.compile(r"\$\{([^}]*)\}")


def is_sweeper_key(key: str) -> bool:
    """Whether ``key`` addresses Hydra (``hydra.sweeper.n_trials``, ``hydra/launcher``)."""
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


def apply(
    key: str, value: Any, is_sweep: bool, hyper: dict[str, Any], written: list[tuple[str, ...]]
) -> str | None:
    """Apply one ``hydra...`` override to ``hyper`` (in place); returns a problem, or ``None``.

    The ``hyper.yml`` paths it sets are appended to ``written``, for :func:`resolve_interpolations`.
    """
    plain_only = f"{key} is a setting of the sweeper; it takes a plain value, not a sweep"
    if key.startswith("hydra/"):
        return plain_only if is_sweep else _group(key, value, hyper)
    parts = key.split(".")
    if parts[:2] != ["hydra", "sweeper"]:
        if parts[:2] == ["hydra", "launcher"]:
            return (
                f"{key}: the launcher's settings have no counterpart here: local workers are set "
                "by --workers or hydra.sweeper.n_jobs, batch jobs by the slurm or pbs section"
            )
        return (
            f"{key} is a setting of Hydra itself, which has no counterpart here (results go to "
            f"optuna.save_path); understood: {_UNDERSTOOD}"
        )
    if len(parts) == 2:
        return f"hydra.sweeper takes its settings one by one; understood: {_UNDERSTOOD}"
    name, rest = parts[2], parts[3:]
    if name in _NO_COUNTERPART:
        return f"{key} has no counterpart here: {_NO_COUNTERPART[name]}"
    if name != "sampler" and (
        rest or name not in ("n_trials", "study_name", "storage", "direction", "n_jobs")
    ):
        return f"{key} is not a setting of the Hydra Optuna sweeper; understood: {_UNDERSTOOD}"
    if is_sweep:
        return plain_only
    if name == "sampler":
        return _sampler(key, rest, value, hyper, written)
    if name == "n_jobs":
        if _workers(value) is None:
            return f"{key}: got {format_value(value)}; the number of local workers, an integer >= 1"
        return None  # the command line reads it as --workers
    section = _optuna(hyper)
    if section is None:
        return f"{key}: the optuna section of hyper.yml is not a mapping"
    if name == "study_name":
        if value is None:
            return f"{key}: got null; the study needs a name here (optuna.name), give one"
        keys = [k for k in ("name", "study_name") if k in section] or ["name"]
        for k in keys:
            section[k] = value if isinstance(value, str) else str(value)
            written.append(("optuna", k))
        return None
    if name == "storage":
        # A URL, as the sweeper takes it: storage_type (the echo-opt file-name forms) would change
        # its meaning. null is the sweeper's in-memory default; here the default journal file.
        section.pop("storage_type", None)
        if value is None:
            section.pop("storage", None)
            return None
    section[name] = value
    written.append(("optuna", name))
    return None


def _group(key: str, value: Any, hyper: dict[str, Any]) -> str | None:
    if key == "hydra/launcher":
        return None
    if key == "hydra/sweeper":
        if value != "optuna":
            return f"{key}: got {format_value(value)}; the one sweeper understood here is optuna"
        return None
    if key == "hydra/sweeper/sampler":
        allowed = ", ".join(SAMPLER_GROUPS)
        if value == "motpe":
            return (
                f"{key}: motpe was removed in Optuna 4.0, tpe handles several objectives; allowed: {allowed}"
            )
        if value not in SAMPLER_GROUPS:
            return f"{key}: got {format_value(value)}; allowed: {allowed}"
        section = _optuna(hyper)
        if section is None:
            return f"{key}: the optuna section of hyper.yml is not a mapping"
        section["sampler"] = {"type": SAMPLER_GROUPS[str(value)]}
        return None
    return f"{key} is a config group of Hydra, which has no counterpart here; understood: {_UNDERSTOOD}"


def _sampler(
    key: str, rest: list[str], value: Any, hyper: dict[str, Any], written: list[tuple[str, ...]]
) -> str | None:
    if not rest:
        return (
            f"{key} takes its arguments one by one ({key}.seed=1); choose the sampler with "
            f"hydra/sweeper/sampler=<name>: {', '.join(SAMPLER_GROUPS)}"
        )
    section = _optuna(hyper)
    if section is None:
        return f"{key}: the optuna section of hyper.yml is not a mapping"
    sampler = section.get("sampler")
    if sampler is None:
        sampler = section["sampler"] = {"type": "TPESampler"}  # the default of both
    if not isinstance(sampler, dict):
        return f"{key}: optuna.sampler in hyper.yml is {format_value(sampler)}, not a mapping"
    if rest == ["type"]:
        return (
            f"{key} is not a setting of the sweeper's sampler; {key[: -len('type')]}_target_ names its class"
        )
    if rest == ["_target_"]:
        prefix = "optuna.samplers."
        name = value[len(prefix) :] if isinstance(value, str) and value.startswith(prefix) else None
        if name not in samplers.SAMPLERS:
            allowed = ", ".join(sorted(samplers.SAMPLERS))
            return f"{key}: got {format_value(value)}; allowed: optuna.samplers.<Name>, Name one of {allowed}"
        sampler["type"] = name
        return None
    node = sampler
    for depth, part in enumerate(rest[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            walked = ".".join(("optuna", "sampler", *rest[: depth + 1]))
            return f"{key}: {walked} is {format_value(node)}, not a mapping"
    node[rest[-1]] = value
    written.append(("optuna", "sampler", *rest))
    return None


def _optuna(hyper: dict[str, Any]) -> dict[str, Any] | None:
    section = hyper.setdefault("optuna", {})
    return section if isinstance(section, dict) else None


def _workers(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


def resolve_interpolations(
    hyper: dict[str, Any],
    model: Mapping[str, Any],
    written: Sequence[tuple[str, ...]],
    sources: Sequence[str],
) -> list[Problem]:
    """Replace ``${key.path}`` in the values at ``written`` with model-config values, as Hydra does.

    ``sources`` are the overrides that wrote each path, named in the problems.
    """
    problems: list[Problem] = []
    for path, source in zip(written, sources, strict=True):
        node: Any = hyper
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or not isinstance(node.get(path[-1]), str):
            continue  # overwritten by a later override
        text = node[path[-1]]
        # In a storage URL, a ${NAME} that is no key of the model config names an environment
        # variable (a password), expanded when the storage opens.
        env_names = tuple(path) == ("optuna", "storage")
        try:
            node[path[-1]] = _interpolate(text, model, env_names)
        except LookupError as err:
            key = source.partition("=")[0].strip()
            problems.append(Problem("", f"override {source!r}: {key}: {err}"))
    return problems


def _interpolate(text: str, model: Mapping[str, Any], env_names: bool = False) -> Any:
    def lookup(expression: str) -> Any:
        path = expression.strip()
        if env_names and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", path) and path not in model:
            return f"${{{expression}}}"
        if not re.fullmatch(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*", path) or path.split(".")[0] == "hydra":
            raise LookupError(
                f"${{{expression}}} is not an interpolation understood here: only ${{key.path}} of "
                "the model config, such as ${experiment_id}"
            )
        node: Any = model
        for part in path.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise LookupError(f"${{{expression}}} names no key of the model config; check the spelling")
            node = node[part]
        return node

    whole = _INTERPOLATION.fullmatch(text)
    if whole:
        return lookup(whole.group(1))  # keeps the value's type, as OmegaConf does
    return _INTERPOLATION.sub(lambda m: str(lookup(m.group(1))), text)


def local_workers(texts: Sequence[str]) -> int | None:
    """The worker count the last ``hydra.sweeper.n_jobs=N`` asks for; ``None`` if none (or not valid)."""
    for text in reversed(texts):
        key, _, raw = text.partition("=")
        if key.strip() == "hydra.sweeper.n_jobs":
            try:
                return _workers(int(raw.strip()))
            except ValueError:
                return None
    return None


def no_effect(texts: Sequence[str]) -> list[str]:
    """The overrides that are accepted and do nothing here (``hydra/sweeper=optuna``, ...)."""
    out = []
    for text in texts:
        key, _, raw = text.partition("=")
        if key.strip() in NO_EFFECT_GROUPS and (key.strip() != "hydra/sweeper" or raw.strip() == "optuna"):
            out.append(text)
    return out

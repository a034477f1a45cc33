"""Read ``hyper.yml`` and ``model.yml``, check everything, and resolve paths.

Every problem is collected and reported in one :class:`ConfigError`, before anything is created,
started or submitted.
"""

from __future__ import annotations

import os
import shlex
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from aimlutils.hyper_opt import schedulers
from aimlutils.hyper_opt.config.command import CommandSpec, check_command_section, with_files_absolute
from aimlutils.hyper_opt.config.locations import (
    check_proxy,
    log_file_of,
    objective_path,
    save_path_of,
    storage_of,
    with_absolute_paths,
)
from aimlutils.hyper_opt.config.run_config import RunConfig, schema_model
from aimlutils.hyper_opt.config.schema import HyperConfigSchema, OptunaSection
from aimlutils.hyper_opt.errors import (
    ConfigError,
    Problem,
    format_value,
    join_path,
    pydantic_problems,
)
from aimlutils.hyper_opt.search_space import SearchSpace, grid, samplers
from aimlutils.hyper_opt.search_space.markers import has_markers, parameters_from_markers
from aimlutils.hyper_opt.search_space.overrides import apply_overrides


def read_yaml(path: str | os.PathLike[str], label: str) -> dict[str, Any]:
    """Read a YAML mapping, or raise :class:`ConfigError` saying why it cannot be read."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError([Problem("", f"file {str(path)!r} does not exist")], label) from None
    except IsADirectoryError:
        raise ConfigError([Problem("", f"{path} is a directory; give the {label} file")], label) from None
    except OSError as err:
        raise ConfigError([Problem("", f"{path} cannot be read: {err.strerror}")], label) from None
    except UnicodeDecodeError:
        raise ConfigError([Problem("", f"{path} is not a text file (UTF-8 YAML)")], label) from None
    except yaml.YAMLError as err:
        raise ConfigError([Problem("", f"{path} is not valid YAML: {err}")], label) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            [Problem("", f"{path} must hold a mapping of keys, got {type(data).__name__}")], label
        )
    return data


def load_config(
    hyper_path: str | os.PathLike[str],
    model_path: str | os.PathLike[str] | None,
    base_dir: Path | None = None,
    overrides: Sequence[str] = (),
    objective_given: bool = False,
) -> RunConfig:
    """Read and check both files; relative paths are taken from ``base_dir`` (default: cwd).

    Without ``model_path`` the model config is empty (for commands that only read the study).
    ``overrides`` (``key=value`` from the command line) change the two configs before they are
    checked, so every check sees them, and so does :class:`RunConfig`, which workers read.

    Raises:
        ConfigError: listing every problem found.
    """
    hyper = read_yaml(hyper_path, str(hyper_path))
    if not hyper:
        raise ConfigError(
            [
                Problem(
                    "",
                    f"{hyper_path} is empty; it needs at least an optuna section (name, objective, n_trials)",
                )
            ],
            str(hyper_path),
        )
    model = read_yaml(model_path, str(model_path)) if model_path is not None else {}
    if overrides:
        problems = apply_overrides(hyper, model, overrides)
        if problems:
            raise ConfigError(problems, "the command line")
    base = Path(base_dir or Path.cwd())
    return check_config(hyper, model, base, Path(hyper_path).parent, objective_given, str(hyper_path))


def check_config(
    hyper: dict[str, Any],
    model: dict[str, Any],
    base_dir: Path,
    hyper_dir: Path | None = None,
    objective_given: bool = False,
    source: str = "hyper.yml",
) -> RunConfig:
    """Check a parsed ``hyper.yml`` against itself and the model config.

    ``objective_given``: the caller brings its own Objective class, so ``optuna.objective`` may
    be left out (it is then not used).
    """
    problems: list[Problem] = []
    schema: HyperConfigSchema | None = None
    try:
        schema = schema_model().model_validate(hyper)
    except ValidationError as err:
        problems += pydantic_problems(err, allowed_keys=_allowed_keys, data=hyper)
    optuna_raw: Mapping[str, Any] = hyper["optuna"] if isinstance(hyper.get("optuna"), Mapping) else {}
    section = _valid_optuna(optuna_raw)
    problems += _check_names(hyper, optuna_raw)
    problems += _check_metrics(section)
    save_path, found = save_path_of(hyper, optuna_raw, base_dir)
    problems += found
    # Without an optuna section the schema already says that it is missing.
    needs_one = not objective_given and isinstance(hyper.get("optuna"), Mapping)
    objective, found = objective_path(optuna_raw.get("objective"), base_dir, hyper_dir, not needs_one)
    problems += found
    space, found = _search_space(optuna_raw, model)
    problems += found
    command, found = check_command_section(optuna_raw.get("objective"), space.distributions)
    problems += found
    if command is not None:
        command = with_files_absolute(command, base_dir, *([hyper_dir] if hyper_dir else []))
    problems += _check_sampler_and_pruner(optuna_raw, space)
    problems += _check_target(section)
    problems += _check_gpu_hours(section)
    problems += _check_bad_node_failures(section, "bad_node_failures" in optuna_raw)
    problems += _check_enqueue(optuna_raw, space)
    storage, found = storage_of(optuna_raw, save_path or base_dir, base_dir)
    problems += found
    problems += check_proxy(section, storage)
    problems += _check_gpus_per_trial(hyper, optuna_raw)
    problems += _check_schedulers(hyper, optuna_raw.get("gpu") is True, optuna_raw.get("gpus_per_trial"))
    no_objective = objective is None and command is None and not objective_given
    if problems or schema is None or save_path is None or no_objective or storage is None:
        # Marker problems are key paths of model.yml; say so when there may be some.
        raise ConfigError(problems, f"{source} / model.yml" if has_markers(model) else source)
    log_file = log_file_of(schema, save_path, base_dir)
    return RunConfig(
        model=model,
        schema=_with_command(with_absolute_paths(schema, save_path, objective, storage, log_file), command),
        save_path=save_path,
        objective=objective,
        storage=storage,
        space=space,
        log_file=log_file,
        command=command,
    )


def _with_command(schema: HyperConfigSchema, command: CommandSpec | None) -> HyperConfigSchema:
    """The schema with the command as checked (its files' paths absolute), for the workers' copy."""
    objective = schema.optuna.objective
    if command is None or not isinstance(objective, dict):
        return schema
    section = schema.optuna.model_copy(
        update={"objective": {**objective, "command": shlex.join(command.words)}}
    )
    return schema.model_copy(update={"optuna": section})


def _valid_optuna(optuna_raw: Mapping[str, Any]) -> OptunaSection | None:
    """The ``optuna`` section when it is valid by itself, for the checks across its keys."""
    try:
        return OptunaSection.model_validate(optuna_raw)
    except ValidationError:
        return None  # the whole schema's validation reports why


def _check_schedulers(hyper: Mapping[str, Any], gpu: bool, gpus_per_trial: Any = None) -> list[Problem]:
    given = [name for name in schedulers.names() if isinstance(hyper.get(name), Mapping)]
    problems = []
    for name in given:
        section = hyper[name]
        inherited = isinstance(gpus_per_trial, int) and section.get("gpus_per_trial") is None
        if inherited:  # the jobs' trials get optuna.gpus_per_trial: checked against the job's GPUs
            section = {**section, "gpus_per_trial": gpus_per_trial}
        for problem in schedulers.get(name).check_section(section, gpu):
            if inherited and problem.path == join_path(name, "gpus_per_trial"):
                problem = Problem("optuna.gpus_per_trial", problem.message)
            problems.append(problem)
    if len(given) > 1:
        problems.append(
            Problem(
                given[-1],
                f"{'both ' if len(given) == 2 else ''}{' and '.join(given)} sections are given; "
                "keep the one your cluster runs",
            )
        )
    return problems


def _check_gpus_per_trial(hyper: Mapping[str, Any], optuna_raw: Mapping[str, Any]) -> list[Problem]:
    """``gpus_per_trial`` in ``optuna`` and in the scheduler section: one number, given in either."""
    local = optuna_raw.get("gpus_per_trial")
    given = (
        [("optuna.gpus_per_trial", local)] if isinstance(local, int) and not isinstance(local, bool) else []
    )
    for name in schedulers.names():
        section = hyper.get(name)
        value = section.get("gpus_per_trial") if isinstance(section, Mapping) else None
        if isinstance(value, int) and not isinstance(value, bool):
            given.append((join_path(name, "gpus_per_trial"), value))
    if not given:
        return []
    path, value = given[0]
    if len(given) > 1 and given[1][1] != value:
        return [
            Problem(
                path,
                f"{value} differs from {given[1][0]} ({given[1][1]}); a trial needs the same GPUs "
                "locally and in a job: give one of them",
            )
        ]
    if value > 1 and optuna_raw.get("gpu") is not True:
        return [Problem(path, f"{value} GPUs per trial, but optuna.gpu is not true; set optuna.gpu: true")]
    return []


def _allowed_keys(loc: tuple[Any, ...]) -> Sequence[str]:
    """The keys a schema model allows at ``loc``, found by walking the models' annotations."""
    model: type[BaseModel] | None = schema_model()
    for key in loc:
        field = model.model_fields.get(key) if model is not None else None
        if field is None:
            return []
        model = next(
            (
                a
                for a in typing.get_args(field.annotation) or (field.annotation,)
                if isinstance(a, type) and issubclass(a, BaseModel)
            ),
            None,
        )
    return list(model.model_fields) if model is not None else []


def _check_names(hyper: Mapping[str, Any], optuna_raw: Mapping[str, Any]) -> list[Problem]:
    name, study_name = optuna_raw.get("name"), optuna_raw.get("study_name")
    if name is None and study_name is None and isinstance(hyper.get("optuna"), Mapping):
        return [Problem("optuna.name", "required key is missing; the study's name (or optuna.study_name)")]
    if name is not None and study_name is not None and name != study_name:
        return [
            Problem(
                "optuna.study_name",
                f"{study_name!r} differs from optuna.name {name!r}; give one of them",
            )
        ]
    return []


def _check_metrics(section: OptunaSection | None) -> list[Problem]:
    if section is None:
        return []
    metrics, directions = list(section.metrics), list(section.directions)
    if len(metrics) != len(directions):
        return [
            Problem(
                "optuna.direction",
                f"got {len(directions)} direction(s) {directions} for {len(metrics)} metric(s) "
                f"{metrics}; give one direction per metric",
            )
        ]
    if len(set(metrics)) != len(metrics):
        return [Problem("optuna.metric", f"got {metrics}; each metric may appear once")]
    return []


def _search_space(
    optuna_raw: Mapping[str, Any], model: Mapping[str, Any]
) -> tuple[SearchSpace, list[Problem]]:
    section = optuna_raw.get("parameters", {})
    if not isinstance(section, Mapping):
        section = {}  # the schema reports the wrong type
    space, problems = SearchSpace.from_parameters_section(section)
    problems += space.check_targets(model)
    # Inline markers come after the section, so a marker may depend on a value the section sets.
    inline, found = parameters_from_markers(model)
    space, twice = space.extended(inline)
    return space, problems + found + twice


def _check_sampler_and_pruner(optuna_raw: Mapping[str, Any], space: SearchSpace) -> list[Problem]:
    problems: list[Problem] = []
    for kind in ("sampler", "pruner"):
        spec = optuna_raw.get(kind)
        if (
            kind == "sampler"
            and isinstance(spec, Mapping)
            and grid.is_grid(spec)
            and "search_space" not in spec
        ):
            # The grid comes from the parameters; say which cannot be enumerated.
            _, found = grid.grid_from_space(space)
            problems += found
            if found:
                continue
            spec = grid.with_grid(spec, space)
        if isinstance(spec, Mapping):
            _, found = samplers.build(kind, spec, f"optuna.{kind}")
            problems += found
    return problems


def _check_target(section: OptunaSection | None) -> list[Problem]:
    if section is None or section.target is None or len(section.metrics) == 1:
        return []
    return [
        Problem(
            "optuna.target",
            f"got {format_value(section.target)} with {len(section.metrics)} metrics "
            f"{list(section.metrics)}; a target needs a single metric (remove target or keep one metric)",
        )
    ]


def _check_gpu_hours(section: OptunaSection | None) -> list[Problem]:
    if section is None or section.gpu_hours is None or section.gpu:
        return []
    return [
        Problem(
            "optuna.gpu_hours",
            f"got {format_value(section.gpu_hours)} with optuna.gpu false: trials on CPUs use no "
            "GPU-hours, so this budget would never be spent; set optuna.gpu: true, or bound the study "
            "by optuna.time_budget_s",
        )
    ]


def _check_bad_node_failures(section: OptunaSection | None, given: bool) -> list[Problem]:
    """A node's streak, when given, must be shorter than the study's: else the study stops before
    a node is marked. (The default is left alone: a small ``max_failures`` was chosen on purpose.)"""
    if section is None or not given or section.bad_node_failures is None or section.max_failures is None:
        return []
    if section.bad_node_failures < section.max_failures:
        return []
    return [
        Problem(
            "optuna.bad_node_failures",
            f"got {section.bad_node_failures}; must be below optuna.max_failures "
            f"({section.max_failures}), or the study stops before a bad node is found: lower it, "
            "or null to never leave a node out",
        )
    ]


def _check_enqueue(optuna_raw: Mapping[str, Any], space: SearchSpace) -> list[Problem]:
    entries = optuna_raw.get("enqueue") or []
    if not isinstance(entries, list):
        return []
    distributions = space.distributions
    problems = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            continue  # the schema reports it
        for name, value in entry.items():
            path = join_path("optuna.enqueue", index, name)
            if name not in distributions:
                known = ", ".join(distributions) or "(none)"
                problems.append(Problem(path, f"not a parameter name; parameters: {known}"))
                continue
            dist = distributions[name]
            try:
                inside = dist._contains(dist.to_internal_repr(value))
            except (TypeError, ValueError):
                inside = False
            if not inside:
                problems.append(Problem(path, f"{format_value(value)} is outside {dist}"))
    return problems

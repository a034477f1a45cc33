"""Where a study's files and storage are: ``save_path``, ``objective.py``, the storage URL and
the log file, checked and made absolute, so that workers may start in any directory."""

from __future__ import annotations

import ast
import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from aimlutils.hyper_opt import schedulers
from aimlutils.hyper_opt.config.schema import HyperConfigSchema, OptunaSection
from aimlutils.hyper_opt.errors import Problem, format_value
from aimlutils.hyper_opt.storage import (
    StorageSpec,
    kinds,
    missing_driver,
    parse_storage,
    redact,
    secrets,
    titles,
)


def save_path_of(
    hyper: Mapping[str, Any], optuna_raw: Mapping[str, Any], base_dir: Path
) -> tuple[Path | None, list[Problem]]:
    top, inner = hyper.get("save_path"), optuna_raw.get("save_path")
    if top is not None and inner is not None and top != inner:
        return None, [
            Problem("save_path", f"{top!r} differs from optuna.save_path {inner!r}; give one of them")
        ]
    chosen = inner if inner is not None else top
    if chosen is None:
        return None, [
            Problem("optuna.save_path", "required key is missing; the directory for the study's results")
        ]
    if not isinstance(chosen, str):
        return None, []  # the schema reports the wrong type
    return _absolute(chosen, base_dir), []


def _absolute(path: str, base_dir: Path) -> Path:
    expanded = Path(os.path.expandvars(os.path.expanduser(path)))
    return expanded if expanded.is_absolute() else (base_dir / expanded).resolve()


def objective_path(
    value: Any, base_dir: Path, hyper_dir: Path | None, objective_given: bool
) -> tuple[Path | None, list[Problem]]:
    if value is None and not objective_given:
        return None, [
            Problem(
                "optuna.objective", "required key is missing; the path of objective.py, or a command mapping"
            )
        ]
    if not isinstance(value, str) or objective_given:
        return None, []  # a command mapping, or a wrong type the schema reports
    candidates = [_absolute(value, base_dir)]
    if hyper_dir is not None and not Path(value).is_absolute():
        candidates.append(_absolute(value, hyper_dir.resolve()))
    for candidate in candidates:
        if candidate.is_file():
            if candidate.suffix != ".py":
                return None, [Problem("optuna.objective", f"{value!r} is not a Python file (.py)")]
            problem = check_objective_source(candidate)
            return (None, [Problem("optuna.objective", problem)]) if problem else (candidate, [])
    looked = " and ".join(str(c) for c in dict.fromkeys(candidates))
    return None, [Problem("optuna.objective", f"file {value!r} not found (looked for {looked})")]


def check_objective_source(path: Path) -> str | None:
    """A problem with ``objective.py`` that is visible without importing it, else ``None``.

    Importing would load the user's training stack (torch, TensorFlow) on the login node; parsing
    finds syntax errors and a missing ``Objective`` class in milliseconds.
    """
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except OSError as err:
        return f"{path} cannot be read: {err.strerror}; check its permissions"
    except UnicodeDecodeError:
        return f"{path} is not a text file (UTF-8)"
    except SyntaxError as err:
        return f"{path} line {err.lineno}: {err.msg}"
    if not any(isinstance(node, ast.ClassDef) and node.name == "Objective" for node in tree.body):
        return f"{path} defines no class Objective(BaseObjective)"
    return None


def storage_of(
    optuna_raw: Mapping[str, Any], save_path: Path, base_dir: Path
) -> tuple[StorageSpec | None, list[Problem]]:
    storage, storage_type = optuna_raw.get("storage"), optuna_raw.get("storage_type")
    if storage is not None and not isinstance(storage, str):
        return None, []  # the schema reports it
    kind = storage_type if isinstance(storage_type, str) else None
    try:
        spec = parse_storage(storage, kind, save_path, base_dir)
    except ValueError as err:
        return None, [
            Problem("optuna.storage", f"got {format_value(redact(storage) if storage else storage)}; {err}")
        ]
    written, secret = secrets.written_form(spec.location)
    spec = StorageSpec(spec.kind, written, secret)
    try:
        spec.url()
    except secrets.MissingVariable as err:
        inline = (
            "; it stands for the password written in the hyper.yml this copy was made from: give that "
            "file instead, or"
            if str(err) == secrets.PASSWORD_ENV
            else "; export it before optimize.py (its workers and jobs take it from there), or"
        )
        return None, [
            Problem(
                "optuna.storage",
                f"{spec} names ${{{err}}}, which is not set in the environment{inline} give the password "
                "another way: " + secrets.SAFER_WAYS.removeprefix("safer: "),
            )
        ]
    driver = missing_driver(spec)
    return spec, ([Problem("optuna.storage", driver)] if driver else [])


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def check_proxy(section: OptunaSection | None, storage: StorageSpec | None) -> list[Problem]:
    if section is None or section.proxy_section is None or storage is None:
        return []
    if storage.storage_kind.proxy_can_front:
        missing = [m for m in ("grpc", "google.protobuf") if not _installed(m)]
        if missing:
            return [
                Problem(
                    "optuna.proxy",
                    f"the storage proxy needs grpcio and protobuf ({', '.join(missing)} not found): "
                    "pip install 'aimlutils[proxy]', or remove optuna.proxy",
                )
            ]
        return []
    fronted = titles([kind for kind in kinds() if kind.proxy_can_front])
    return [
        Problem(
            "optuna.proxy",
            f"the storage proxy fronts {fronted}, but optuna.storage is {storage.kind} "
            f"({storage}); "
            "a journal file or Redis needs no proxy (and Optuna's proxy can lose trials with them), "
            "SQLite cannot serve many workers: remove optuna.proxy, or use a database URL",
        )
    ]


def log_file_of(schema: HyperConfigSchema, save_path: Path, base_dir: Path) -> Path | None:
    if schema.log is True:
        return save_path / "log.txt"
    if isinstance(schema.log, BaseModel) and getattr(schema.log, "save_path", None):
        return _absolute(str(schema.log.save_path), base_dir)
    return None


def with_absolute_paths(
    schema: HyperConfigSchema,
    save_path: Path,
    objective: Path | None,
    storage: StorageSpec,
    log_file: Path | None,
) -> HyperConfigSchema:
    """The schema with its paths absolute, for workers that may start in another directory."""
    data = schema.model_dump(exclude_unset=True)
    data.pop("save_path", None)
    optuna = data["optuna"]
    for name in schedulers.names():
        # Jobs read gpus_per_trial from their section; one given in optuna applies to them too.
        section = data.get(name)
        if isinstance(section, dict) and "gpus_per_trial" not in section and "gpus_per_trial" in optuna:
            section["gpus_per_trial"] = optuna["gpus_per_trial"]
    optuna.pop("storage_type", None)
    optuna.update(save_path=str(save_path), storage=storage.location)
    if objective is not None:  # a command runs in the trial's directory, whatever its paths
        optuna["objective"] = str(objective)
    if log_file is not None:
        data["log"] = {"save_path": str(log_file)}
    return type(schema).model_validate(data)

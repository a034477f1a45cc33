"""Finding and building the user's ``Objective`` from ``objective.py``."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from aimlutils.hyper_opt.base_objective import BaseObjective

_ARGS = ("study", "config", "metric", "device")


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


def import_objective_module(path: Path) -> ModuleType:
    """Import ``objective.py``; its directory goes on ``sys.path`` so it can import its neighbours."""
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location("objective", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def build_objective(source: ModuleType | type[BaseObjective], available: dict[str, Any]) -> BaseObjective:
    """Instantiate ``source`` (an Objective class, or a module's ``Objective``) with the
    arguments its ``__init__`` names.

    Both the original ``(study, config, metric, device)`` and echo-opt's ``(config, metric)``
    signatures work, because arguments are matched by name.
    """
    cls = getattr(source, "Objective", None) if isinstance(source, ModuleType) else source
    if not (inspect.isclass(cls) and issubclass(cls, BaseObjective)):
        where = source.__file__ if isinstance(source, ModuleType) else repr(source)
        raise TypeError(f"{where} must define class Objective(BaseObjective)")
    kwargs = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name in available:
            kwargs[name] = available[name]
        elif param.default is inspect.Parameter.empty:
            raise TypeError(
                f"Objective.__init__ needs argument {name!r}; the worker can pass {', '.join(_ARGS)}"
            )
    return cls(**kwargs)

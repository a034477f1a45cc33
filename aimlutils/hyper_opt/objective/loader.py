"""Finding and building the user's ``Objective`` from ``objective.py``."""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from aimlutils.hyper_opt.objective.base import BaseObjective

_ARGS = ("study", "config", "metric", "device")


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

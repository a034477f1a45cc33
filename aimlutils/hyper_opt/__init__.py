"""Distributed multi-GPU hyperparameter optimization on HPC clusters, built on Optuna.

The Python API (see :mod:`aimlutils.hyper_opt.api`)::

    from aimlutils.hyper_opt import optimize
    study = optimize("hyper.yml", "model.yml")

Names are imported on first use, so that ``import aimlutils.hyper_opt.objective.base`` in a
worker does not load the launchers, the config checks and their dependencies.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aimlutils.hyper_opt.api import optimize, read_config, run_worker, submit
    from aimlutils.hyper_opt.config import ConfigError, RunConfig
    from aimlutils.hyper_opt.objective.base import BaseObjective

_WHERE = {
    "optimize": "aimlutils.hyper_opt.api",
    "submit": "aimlutils.hyper_opt.api",
    "read_config": "aimlutils.hyper_opt.api",
    "run_worker": "aimlutils.hyper_opt.api",
    "BaseObjective": "aimlutils.hyper_opt.objective.base",
    "ConfigError": "aimlutils.hyper_opt.config",
    "RunConfig": "aimlutils.hyper_opt.config",
}

__all__ = ["BaseObjective", "ConfigError", "RunConfig", "optimize", "read_config", "run_worker", "submit"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)

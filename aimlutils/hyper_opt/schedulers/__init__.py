"""Batch schedulers, one class each, found by the name of their ``hyper.yml`` section.

SLURM and PBS are built in. Another scheduler is one module with a :class:`Scheduler` subclass,
registered with :func:`register` (in the process that runs ``optimize.py`` and in its workers), or
declared by an installed package under the entry-point group ``aimlutils.hyper_opt.schedulers``
(``name = package.module:Class``), which every process finds by itself.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping

from aimlutils.hyper_opt.schedulers._base import (
    CommandRunner,
    JobEnvironment,
    Scheduler,
    SchedulerSection,
    SubmitError,
    alive,
    run_scheduler_command,
)
from aimlutils.hyper_opt.schedulers.pbs import Pbs
from aimlutils.hyper_opt.schedulers.slurm import Slurm

ENTRY_POINT_GROUP = "aimlutils.hyper_opt.schedulers"

_registry: dict[str, type[Scheduler]] = {"slurm": Slurm, "pbs": Pbs}
_entry_points_loaded = False


def register(cls: type[Scheduler]) -> type[Scheduler]:
    """Make ``cls`` the scheduler of the ``hyper.yml`` section ``cls.name`` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Scheduler)) or not getattr(cls, "name", ""):
        raise TypeError(f"{cls!r} is not a Scheduler subclass with a name")
    _registry[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    _registry.pop(name, None)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name not in _registry:
            register(entry.load())


def names() -> list[str]:
    """The section names of every known scheduler."""
    _load_entry_points()
    return list(_registry)


def get(name: str) -> type[Scheduler]:
    """The scheduler of section ``name``; ``KeyError`` naming the known ones when there is none."""
    _load_entry_points()
    if name not in _registry:
        raise KeyError(f"no scheduler {name!r}; known: {', '.join(_registry)}")
    return _registry[name]


def current_job(environ: Mapping[str, str]) -> tuple[type[Scheduler], JobEnvironment] | None:
    """The scheduler and job this process runs in, from its environment; ``None`` outside a job."""
    _load_entry_points()
    for cls in _registry.values():
        job = cls.job_environment(environ)
        if job is not None:
            return cls, job
    return None


__all__ = [
    "ENTRY_POINT_GROUP",
    "CommandRunner",
    "JobEnvironment",
    "Pbs",
    "Scheduler",
    "SchedulerSection",
    "Slurm",
    "SubmitError",
    "alive",
    "current_job",
    "get",
    "names",
    "register",
    "run_scheduler_command",
    "unregister",
]

"""A checked run configuration: what launchers and workers read, with one source of truth."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from aimlutils.hyper_opt import schedulers
from aimlutils.hyper_opt.config.command import CommandSpec
from aimlutils.hyper_opt.config.schema import HyperConfigSchema, OptunaSection, hyper_schema
from aimlutils.hyper_opt.paths import StudyPaths
from aimlutils.hyper_opt.schedulers import SchedulerSection
from aimlutils.hyper_opt.search_space import SearchSpace
from aimlutils.hyper_opt.storage import StorageSpec


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A checked configuration with absolute paths, as launchers and workers use it.

    The validated :attr:`schema` is the one source of truth; :attr:`hyper`, the copy workers
    read, is written from it.
    """

    model: dict[str, Any]
    schema: HyperConfigSchema
    save_path: Path
    objective: Path | None
    """``objective.py``; ``None`` when the objective is a command."""
    storage: StorageSpec
    space: SearchSpace
    log_file: Path | None
    command: CommandSpec | None = None
    """The command to run per trial, when ``optuna.objective`` is a mapping."""

    @property
    def optuna(self) -> OptunaSection:
        return self.schema.optuna

    @property
    def hyper(self) -> dict[str, Any]:
        """``hyper.yml`` as the user wrote it (and overrides changed it), with absolute paths."""
        return self.schema.model_dump(exclude_unset=True)

    @property
    def study_name(self) -> str:
        return self.optuna.study_name_given

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.optuna.metrics

    @property
    def directions(self) -> tuple[str, ...]:
        return self.optuna.directions

    @property
    def paths(self) -> StudyPaths:
        return StudyPaths(self.save_path)

    @property
    def csv_path(self) -> Path:
        return self.paths.results_csv

    @property
    def scheduler(self) -> tuple[str, SchedulerSection] | None:
        """The name and section of the scheduler ``hyper.yml`` names, if any."""
        for name in schedulers.names():
            section = self.schema.scheduler_section(name)
            if section is not None:
                return name, section
        return None

    @property
    def gpus_per_trial(self) -> int:
        """GPUs each trial gets: ``optuna.gpus_per_trial``, else the scheduler section's, else 1.

        The loader refuses the two when they differ, so a trial has the same GPUs in a job and in
        a ``--local`` run of the same files.
        """
        scheduler = self.scheduler
        return self.optuna.gpus_per_trial or (scheduler[1].gpus_per_trial if scheduler else None) or 1

    def with_optuna(self, **changes: Any) -> RunConfig:
        """This config with ``optuna`` keys changed (``reload=True``, ``n_trials=12``)."""
        section = self.optuna.model_copy(update=changes)
        return dataclasses.replace(self, schema=self.schema.model_copy(update={"optuna": section}))


def schema_model() -> type[HyperConfigSchema]:
    """The ``hyper.yml`` model, with a section for every registered scheduler."""
    return hyper_schema(tuple((name, schedulers.get(name).section_model) for name in schedulers.names()))

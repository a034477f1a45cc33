"""The shape of ``hyper.yml``: sections, keys, types and defaults.

Cross-field rules (``low <= high``, sampler keyword arguments, colon paths against the model
config) are checked in :mod:`aimlutils.hyper_opt.config.loader`, which reports every problem at once.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator
from pydantic_core import PydanticCustomError

from aimlutils.hyper_opt.schedulers import SchedulerSection

Direction = Literal["minimize", "maximize"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LogSection(_Section):
    """``log``: where the run's log file goes (``log: true`` means ``save_path/log.txt``)."""

    save_path: str | None = None


class ProxySection(_Section):
    """``optuna.proxy``: where the storage proxy listens, and the options of its own batch job."""

    # The address the proxy listens on and workers connect to. Default: the node's host name in a
    # job (the address it resolves to, not every interface), 127.0.0.1 for local runs.
    host: str | None = None
    port: int = Field(default=0, ge=0, le=65535)  # 0: any free port
    # Scheduler options of the proxy's job, on top of the workers' (without their GPU requests).
    batch: dict[str, Any] = Field(default_factory=dict)
    # Database connections the proxy holds (its request threads share them).
    connections: int = Field(default=4, ge=1, le=64)


class CheckpointsSection(_Section):
    """``optuna.checkpoints``: which trials' checkpoint folders a study keeps."""

    # Finished chains' checkpoints are removed unless among this many best trials (None: keep all).
    keep_best: int | None = Field(default=3, ge=0)


class OptunaSection(_Section):
    """``optuna``: the study, its objective and its search space."""

    name: str | None = None
    study_name: str | None = None
    reload: bool = False
    # A path to objective.py, or a command mapping checked by aimlutils.hyper_opt.objective.command.
    # Required unless the Python API is given an Objective class (the loader checks).
    objective: str | dict[str, Any] | None = None
    metric: str | list[str] = "val_loss"
    direction: Direction | list[Direction] = "minimize"
    n_trials: int = Field(ge=1)
    gpu: bool = False
    # GPUs each trial gets in a local run (the scheduler section's value when unset, else 1).
    gpus_per_trial: int | None = Field(default=None, ge=1)
    save_path: str | None = None
    storage: str | None = None
    storage_type: Literal["sqlite", "maria", "nfs"] | None = None
    # Who may read save_path: its owner alone, or also the owner's group (never others).
    readable_by: Literal["user", "group"] = "user"
    # Checked against Optuna's classes and the search-space rules by the loader.
    sampler: dict[str, Any] | None = None
    pruner: dict[str, Any] | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    enqueue: list[dict[str, Any]] = Field(default_factory=list)
    max_retries: int = Field(default=1, ge=0)
    # The study stops once this many trials in a row failed by the objective's own error (None: never).
    max_failures: int | None = Field(default=20, ge=1)
    # A node is left out of the study once this many trials in a row failed there, by errors no
    # other node has, while trials succeed elsewhere (None: never).
    bad_node_failures: int | None = Field(default=3, ge=1)
    # In a job with a known end, start no trial that would not reach a checkpoint before it, and
    # stop a trial at a checkpoint after which the next would not come in time.
    fit_wall_time: bool = True
    # The study ends once a trial reaches this value of the metric (in its direction).
    target: float | None = None
    # A trial running longer than this is asked to stop (as by a time limit's warning), and
    # interrupted trial_timeout_grace_s later if it has not left; it ends FAIL, reason "timeout".
    checkpoints: CheckpointsSection = Field(default_factory=CheckpointsSection)
    trial_timeout_s: float | None = Field(default=None, gt=0)
    trial_timeout_grace_s: float = Field(default=10.0, ge=0)
    # The study stops claiming trials once this long has passed since its first trial began, or
    # once its trials have used this many GPU-hours (wall time x GPUs of each trial).
    time_budget_s: float | None = Field(default=None, gt=0)
    gpu_hours: float | None = Field(default=None, gt=0)
    # How long a worker waits for an unreachable storage (a restarting database) before it stops.
    storage_wait_s: float = Field(default=900.0, gt=0)
    # Optuna's gRPC storage proxy in front of PostgreSQL/MySQL: workers hold no database connection.
    proxy: bool | ProxySection = False

    @property
    def proxy_section(self) -> ProxySection | None:
        """The proxy's settings, or ``None`` without a proxy."""
        if self.proxy is True:
            return ProxySection()
        return self.proxy if isinstance(self.proxy, ProxySection) else None

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(self.metric) if isinstance(self.metric, list) else (self.metric,)

    @property
    def directions(self) -> tuple[str, ...]:
        return tuple(self.direction) if isinstance(self.direction, list) else (self.direction,)

    @property
    def study_name_given(self) -> str:
        """``name`` or its synonym ``study_name`` (the loader checks that one is given)."""
        return str(self.study_name or self.name)


class MlflowSection(_Section):
    """``mlflow``: one MLflow run per trial, nested under a run for the study (``mlflow: {}``).

    Without ``tracking_uri`` runs go to ``save_path/mlruns/mlflow.db`` (SQLite), artifacts to
    ``save_path/mlruns/artifacts``; a relative ``sqlite:///`` path is taken from ``save_path``.
    ``experiment_name`` defaults to the study's name.
    """

    tracking_uri: str | None = None
    experiment_name: str | None = None

    @model_validator(mode="after")
    def _mlflow_installed(self) -> MlflowSection:
        # Checked with the config, so a missing package stops the run before any job starts.
        if importlib.util.find_spec("mlflow") is None:
            raise PydanticCustomError(
                "mlflow_missing", "the mlflow section needs MLflow: pip install 'aimlutils[mlflow]'"
            )
        return self


class HyperConfigSchema(_Section):
    """The whole ``hyper.yml``; :func:`hyper_schema` adds a section per known scheduler."""

    log: LogSection | bool | None = None
    save_path: str | None = None
    mlflow: MlflowSection | None = None
    optuna: OptunaSection

    def scheduler_section(self, name: str) -> SchedulerSection | None:
        value = getattr(self, name, None)
        return value if isinstance(value, SchedulerSection) else None


def hyper_schema(schedulers: tuple[tuple[str, type[SchedulerSection]], ...]) -> type[HyperConfigSchema]:
    """The ``hyper.yml`` model with one optional section per ``(name, section model)``.

    Sections come after ``save_path``, in registry order, so messages list keys as users wrote them.
    """
    return _hyper_schema(schedulers)


@functools.cache
def _hyper_schema(schedulers: tuple[tuple[str, type[SchedulerSection]], ...]) -> type[HyperConfigSchema]:
    fields: dict[str, Any] = {
        "log": (LogSection | bool | None, None),
        "save_path": (str | None, None),
        **{name: (model | None, None) for name, model in schedulers},
        "mlflow": (MlflowSection | None, None),
        "optuna": (OptunaSection, ...),
    }
    return create_model("HyperConfigSchema", __base__=HyperConfigSchema, **fields)

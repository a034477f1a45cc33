"""The ``hyper.yml`` reference: each key of the schema with its default and meaning.

The documentation's reference page is made from :func:`markdown_table` when the site is built, and
``tests/test_docs.py`` checks :func:`undocumented` and :func:`unknown`: a key added to the schema
without a line here fails the suite, and a line here for a key the schema lacks does too. The
keys of the scheduler sections (``slurm``, ``pbs``, any registered scheduler) are written once, as
``<scheduler>.key``.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel

from aimlutils.hyper_opt import schedulers
from aimlutils.hyper_opt.config.run_config import schema_model

SCHEDULER = "<scheduler>"

#: ``key path: (default, meaning)``, in the order the reference lists them.
KEYS: dict[str, tuple[str, str]] = {
    "log": ("none", "`true` appends the log to `save_path/log.txt`; a mapping names the file"),
    "log.save_path": ("none", "file the log is appended to"),
    "save_path": ("", "echo-opt's place for `optuna.save_path`; give one of the two"),
    SCHEDULER: ("", "`slurm` or `pbs`: submit the workers as batch jobs (see the tutorial's cluster part)"),
    f"{SCHEDULER}.jobs": ("`1`", "jobs to submit (a job array on SLURM); a reload submits what is useful"),
    f"{SCHEDULER}.batch": (
        "`{}`",
        "any `sbatch`/`qsub` option: one-letter keys become `-x value`, others `--key=value`; "
        "`o` and `e` are relative to `save_path`; PBS takes `l` as a list",
    ),
    f"{SCHEDULER}.kernel": ("none", "line(s) that activate your environment; jobs then run its `python`"),
    f"{SCHEDULER}.bash": ("`[]`", "more setup lines, run first"),
    f"{SCHEDULER}.gpus_per_node": ("none", "GPUs of each job's allocation that its workers share out"),
    f"{SCHEDULER}.gpus_per_trial": ("`1`", "GPUs each worker gets: `gpus_per_node / gpus_per_trial` workers"),
    f"{SCHEDULER}.tasks_per_worker": ("`1`", "workers per GPU group"),
    f"{SCHEDULER}.trials_per_job": ("none", "echo-opt's name for `tasks_per_worker`, read the same way"),
    f"{SCHEDULER}.array": ("`true`", "`false`: one submission per job instead of one job array"),
    f"{SCHEDULER}.throttle": ("none", "job arrays only: at most this many tasks at once (`--array=0-19%8`)"),
    f"{SCHEDULER}.stop_warning_s": (
        "`120`",
        "SIGUSR1 this long before the time limit, so trials save a checkpoint and leave; `0`: none",
    ),
    "mlflow": ("none", "`{}` or a mapping: one MLflow run per trial, nested under a run for the study"),
    "mlflow.tracking_uri": ("`save_path/mlruns/mlflow.db` (SQLite)", "where the runs go"),
    "mlflow.experiment_name": ("the study's name", "the MLflow experiment the runs go to"),
    "optuna": ("required", "the study, its objective and its search space"),
    "optuna.name": ("required", "the study's name (`optuna.study_name` is accepted as well)"),
    "optuna.study_name": ("", "the same as `optuna.name`"),
    "optuna.reload": ("`0`", "`1` continues an existing study to its `n_trials`"),
    "optuna.objective": (
        "required",
        "path to `objective.py` (from the current directory or `hyper.yml`'s), or a command mapping "
        '(see "Tune a command")',
    ),
    "optuna.metric": ("`val_loss`", "key of `train`'s dict to optimize; a list for several objectives"),
    "optuna.direction": ("`minimize`", "`minimize` or `maximize`; a list, one per metric"),
    "optuna.n_trials": ("required", "COMPLETE + PRUNED trials the study ends with"),
    "optuna.gpu": (
        "`false`",
        'use a GPU: each worker gets its own (`CUDA_VISIBLE_DEVICES`), the Objective `device="cuda:0"`',
    ),
    "optuna.gpus_per_trial": ("the scheduler section's, else `1`", "GPUs each trial gets (DDP, `torchrun`)"),
    "optuna.save_path": (
        "required",
        "directory for the journal file, CSV, logs and the configs workers read; one study per folder, "
        "on a file system whose POSIX locks hold across nodes",
    ),
    "optuna.storage": (
        "journal file `save_path/study.journal`",
        "`sqlite:///file.db`, `postgresql://...`, `mysql://...`, `redis://...`, or a journal file path; "
        'a password as `${NAME}` or the driver\'s own ways (see "Security on a shared cluster")',
    ),
    "optuna.storage_type": (
        "",
        "echo-opt: `sqlite` (`storage` is a file name in `save_path`), `maria` (a MySQL URL), "
        "`nfs` (journal file)",
    ),
    "optuna.readable_by": (
        "`user`",
        "who may read `save_path`: `user` (mode 0700) or `group` (2750); never others",
    ),
    "optuna.sampler": ("TPE, per worker count", "any Optuna sampler by class name, with its arguments"),
    "optuna.pruner": ("`{type: NopPruner}`", "any Optuna pruner by class name, with its keyword arguments"),
    "optuna.parameters": ("`{}`", "the search space (below)"),
    "optuna.enqueue": ("`[]`", "parameter dicts (`{lr: 0.001}`) tried first"),
    "optuna.max_retries": (
        "`1`",
        "how often the parameters of a trial whose worker died or was stopped are queued again "
        "without progress; `0`: never",
    ),
    "optuna.max_failures": (
        "`20`",
        "the study stops once this many trials in a row failed by the objective's own error; also the "
        "most times one trial's chain is continued; `null`: never",
    ),
    "optuna.checkpoints": ("`{keep_best: 3}`", "which trials' checkpoint folders the study keeps"),
    "optuna.checkpoints.keep_best": (
        "`3`",
        "a finished chain's checkpoints are removed unless it is among this many best trials "
        "(pruned ones at once); running chains are never touched; `null`: keep all",
    ),
    "optuna.trial_timeout_s": (
        "none",
        "a trial running longer is asked to stop, as by a time limit's warning (it may checkpoint "
        "and leave), and ends FAIL with the reason `timeout`; not a failure of the objective",
    ),
    "optuna.trial_timeout_grace_s": (
        "`10`",
        "how long after `trial_timeout_s` a trial that has not left is interrupted",
    ),
    "optuna.time_budget_s": (
        "none",
        "the study starts no trial once this long has passed since its first trial began; running "
        "trials finish",
    ),
    "optuna.gpu_hours": (
        "none",
        "the study starts no trial once its trials used this many GPU-hours (wall time x GPUs of each)",
    ),
    "optuna.bad_node_failures": (
        "`3`",
        "a node is left out once this many trials in a row failed there, by errors no other node has, "
        'while trials succeed elsewhere (see "Bad nodes"); `null`: never',
    ),
    "optuna.fit_wall_time": (
        "`true`",
        "start no trial that could not reach a checkpoint before its job's end, and stop a trial at a "
        'checkpoint after which the next would come too late (see "Trials that fit the wall time"); '
        "`false`: a trial must fit whole, by this worker's longest",
    ),
    "optuna.target": ("none", "end the study once a trial's metric reaches this value (one metric only)"),
    "optuna.storage_wait_s": ("`900`", "how long a worker waits for a storage that does not answer"),
    "optuna.proxy": (
        "`false`",
        "`true` or a mapping: workers reach PostgreSQL/MySQL through the study's gRPC storage proxy",
    ),
    "optuna.proxy.host": (
        "`127.0.0.1` locally, the node's host name in a job",
        "the address the proxy listens on and workers connect to",
    ),
    "optuna.proxy.port": ("`0` (any free port)", "the proxy's port"),
    "optuna.proxy.batch": ("`{}`", "scheduler options of the proxy's own job, over the workers' (no GPUs)"),
    "optuna.proxy.connections": ("`4`", "database connections the proxy holds"),
}


def _sections(annotation: Any) -> list[type[BaseModel]]:
    """The models among an annotation's types (``LogSection | bool | None`` gives ``LogSection``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return [m for arg in typing.get_args(annotation) for m in _sections(arg)]
    return []


def _walk(model: type[BaseModel], prefix: str) -> list[str]:
    paths = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.append(path)
        for section in _sections(field.annotation):
            paths += _walk(section, f"{path}.")
    return paths


def schema_paths(model: type[BaseModel] | None = None) -> list[str]:
    """Every key path of the ``hyper.yml`` schema, scheduler sections as ``<scheduler>``.

    Example:
        >>> paths = schema_paths()
        >>> "optuna.proxy.connections" in paths, "<scheduler>.stop_warning_s" in paths
        (True, True)
    """
    names = set(schedulers.names())
    out: list[str] = []
    for path in _walk(model or schema_model(), ""):
        head, dot, rest = path.partition(".")
        general = SCHEDULER + dot + rest if head in names else path
        if general not in out:
            out.append(general)
    return out


def undocumented(model: type[BaseModel] | None = None) -> list[str]:
    """Schema keys without a line in :data:`KEYS`."""
    return [p for p in schema_paths(model) if p not in KEYS]


def unknown(model: type[BaseModel] | None = None) -> list[str]:
    """Lines of :data:`KEYS` for keys the schema does not have."""
    paths = set(schema_paths(model))
    return [k for k in KEYS if k not in paths]


def markdown_table() -> str:
    """The reference table, one row per key, for the documentation."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    rows += [f"| `{key}` | {default} | {meaning} |" for key, (default, meaning) in KEYS.items()]
    return "\n".join(rows)

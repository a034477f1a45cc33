"""What a worker is made of: its identity, its storage, its liveness checks and the user's Objective."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import optuna

from aimlutils.hyper_opt import schedulers
from aimlutils.hyper_opt.config import RunConfig
from aimlutils.hyper_opt.coordination import Liveness
from aimlutils.hyper_opt.coordination.jobs import job_ids, study_queue
from aimlutils.hyper_opt.objective.base import BaseObjective
from aimlutils.hyper_opt.objective.command import CommandObjective
from aimlutils.hyper_opt.objective.loader import build_objective, import_objective_module
from aimlutils.hyper_opt.storage import open_storage
from aimlutils.hyper_opt.storage.proxy import client_opener


def device_for(gpu: bool, environ: Mapping[str, str] = os.environ) -> str:
    """``cuda:0`` when GPUs are wanted and this process was given one, else ``cpu``."""
    return "cuda:0" if gpus_for(gpu, environ) else "cpu"


def gpus_for(gpu: bool, environ: Mapping[str, str] = os.environ) -> int:
    """How many GPUs this worker's trials have: the ids in ``CUDA_VISIBLE_DEVICES`` (0 on CPU).

    Example:
        >>> gpus_for(True, {"CUDA_VISIBLE_DEVICES": "2,3"}), gpus_for(False, {"CUDA_VISIBLE_DEVICES": "2"})
        (2, 0)
    """
    visible = [g.strip() for g in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    return len(visible) if gpu and visible not in ([], ["-1"], ["NoDevFiles"]) else 0


def device_kind(gpu: bool, environ: Mapping[str, str] = os.environ) -> str:
    """The kind of GPU this worker's trials run on, as the driver names it (``NVIDIA A100-SXM4-40GB``),
    or ``cpu`` when it has none or none can be named: trials on one kind take alike to a checkpoint.

    Example:
        >>> device_kind(False)
        'cpu'
    """
    if not gpus_for(gpu, environ):
        return "cpu"
    return _nvidia_smi_name(environ) or _torch_name() or "cpu"


def _nvidia_smi_name(environ: Mapping[str, str]) -> str | None:
    """The name ``nvidia-smi`` gives this worker's first GPU (all of a node's, when they are alike)."""

    def names(*more: str) -> list[str]:
        query = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", *more]
        out = subprocess.run(query, capture_output=True, text=True, timeout=30, check=True).stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    try:
        found = names()
        if len(set(found)) > 1:  # mixed kinds: the one of this worker's first GPU, by its id
            found = names("-i", environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip())
    except (OSError, subprocess.SubprocessError):
        return None
    return found[0] if found else None


def _torch_name() -> str | None:
    """The name torch gives the first visible GPU, when the objective has imported torch."""
    torch = sys.modules.get("torch")
    try:
        return str(torch.cuda.get_device_name(0)) if torch is not None and torch.cuda.is_available() else None
    except Exception:  # a driver that torch cannot use: no name
        return None


def worker_identity(index: int, environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """Who runs a trial: stored with it, and read by others to tell whether this worker lives."""
    job = schedulers.current_job(environ)
    host = socket.gethostname()
    return {
        "worker": index,
        "host": host,
        "node": (job[1].node if job else None) or host,
        "pid": os.getpid(),
        "job_id": job[1].job_id if job else None,
        # Which run of the job this is: a requeued job keeps its id.
        "restarts": job[1].restarts if job else 0,
        "gpu": environ.get("CUDA_VISIBLE_DEVICES"),
    }


def liveness_for(cfg: RunConfig, environ: Mapping[str, str], me: dict[str, Any]) -> Liveness:
    """Workers in jobs ask their scheduler's queue about workers on other hosts; others cannot."""
    job = schedulers.current_job(environ)
    if job is None:
        return Liveness(me=me)
    scheduler = job[0]()
    return Liveness(
        study_queue(scheduler, cfg.paths),
        cache=cfg.paths.queue_cache,
        me=me,
        job_alive=scheduler.job_alive,
        study_jobs=lambda: job_ids(cfg.paths),
    )


def build_worker_objective(
    cfg: RunConfig,
    study: optuna.Study,
    identity: dict[str, Any],
    objective_class: type[BaseObjective] | None = None,
    hold_records: bool = False,
) -> BaseObjective:
    """The user's Objective (from ``objective.py``, a command, or ``objective_class``), set up.

    ``hold_records``: the objective leaves each trial's record for the caller, which stores it with
    the trial's end (a worker's :class:`~aimlutils.hyper_opt.coordination.TrialLife`).
    """
    device, gpus = device_for(cfg.optuna.gpu), gpus_for(cfg.optuna.gpu)
    metric: Any = cfg.metrics[0] if len(cfg.metrics) == 1 else list(cfg.metrics)
    available = {"study": study, "config": cfg.model, "metric": metric, "device": device}
    module = None
    if objective_class is not None:
        objective = build_objective(objective_class, available)
    elif cfg.command is not None:
        objective = CommandObjective(cfg.command, cfg.save_path, **available)
    elif cfg.objective is not None:
        module = import_objective_module(cfg.objective)
        objective = build_objective(module, available)
    else:  # the config checks make this unreachable
        raise ValueError("optuna.objective: neither a file nor a command")
    # hyper.yml decides the metric and the device, whatever the Objective's defaults say.
    objective.metric, objective.device, objective.worker_index = metric, device, identity["worker"]
    objective.gpus = gpus
    objective.worker_identity = identity
    objective.search_space = cfg.space
    objective.study_paths = cfg.paths
    objective.optuna_section = dict(cfg.hyper["optuna"])
    objective.custom_updates = getattr(module, "custom_updates", None) if module else None
    objective.held_records = {} if hold_records else None
    if cfg.schema.mlflow is not None:
        from aimlutils.hyper_opt.objective.tracking import TrialTracker  # MLflow only for studies that use it

        objective.mlflow_run = TrialTracker(cfg, identity, objective.held_records).trial_run
    return objective


def worker_storage(cfg: RunConfig, index: int) -> optuna.storages.BaseStorage:
    """The study's storage as a worker holds it: one database connection, or none through the proxy."""
    proxy = client_opener(cfg.paths) if cfg.optuna.proxy_section is not None else None
    name = f"aimlutils worker {index} {cfg.study_name}"
    # Cached as in plain Optuna (``get_storage``): a trial's suggestions, reads and the sampler's
    # view of the study ask the database for new and unfinished trials only.
    return open_storage(
        cfg.storage, wait_s=cfg.optuna.storage_wait_s, connections=1, proxy=proxy, name=name, cached=True
    )

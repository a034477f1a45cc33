"""Picking the launcher for a run: the scheduler named in ``hyper.yml``, or local processes."""

from __future__ import annotations

from pathlib import Path

from aimlutils.hyper_opt.config import RunConfig
from aimlutils.hyper_opt.launchers.batch import BatchLauncher
from aimlutils.hyper_opt.launchers.pbs import PbsLauncher
from aimlutils.hyper_opt.launchers.slurm import SlurmLauncher
from aimlutils.hyper_opt.liveness import QueueQuery

#: The program that submits jobs, per scheduler section.
SUBMIT_PROGRAM = {"slurm": "sbatch", "pbs": "qsub"}


def batch_launcher(cfg: RunConfig, base_dir: Path | None = None) -> BatchLauncher | None:
    """The SLURM or PBS launcher for ``cfg``'s scheduler section, or ``None`` without one."""
    if cfg.scheduler is None:
        return None
    name, section = cfg.scheduler
    cls = SlurmLauncher if name == "slurm" else PbsLauncher
    return cls(cfg, section, base_dir)


def scheduler_queue(cfg: RunConfig) -> QueueQuery | None:
    """The queue query of ``cfg``'s scheduler, for telling dead jobs from live ones."""
    launcher = batch_launcher(cfg)
    return launcher.queue if launcher is not None else None

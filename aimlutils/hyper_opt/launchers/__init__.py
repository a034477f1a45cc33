"""Launchers start workers: local processes, or batch jobs of a scheduler."""

from aimlutils.hyper_opt.launchers.base import Launcher, WorkerCommand, save_run_configs
from aimlutils.hyper_opt.launchers.batch import BatchLauncher, batch_launcher, scheduler_for
from aimlutils.hyper_opt.launchers.jobs import JobRecord, job_ids, read_jobs, study_queue
from aimlutils.hyper_opt.launchers.local import LocalLauncher, default_workers, gpu_groups, visible_gpus

__all__ = [
    "BatchLauncher",
    "JobRecord",
    "Launcher",
    "LocalLauncher",
    "WorkerCommand",
    "batch_launcher",
    "default_workers",
    "gpu_groups",
    "job_ids",
    "read_jobs",
    "save_run_configs",
    "scheduler_for",
    "study_queue",
    "visible_gpus",
]

"""Launchers start workers: local processes here; schedulers in their own modules."""

from aimlutils.hyper_opt.launchers.base import Launcher, WorkerCommand, save_run_configs
from aimlutils.hyper_opt.launchers.local import LocalLauncher, default_workers, visible_gpus

__all__ = [
    "Launcher",
    "LocalLauncher",
    "WorkerCommand",
    "default_workers",
    "save_run_configs",
    "visible_gpus",
]

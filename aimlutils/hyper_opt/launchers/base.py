"""What every launcher does: save the run's configs, then start workers somewhere."""

from __future__ import annotations

import abc
import dataclasses
import sys
from pathlib import Path

import yaml

from aimlutils.hyper_opt.config import RunConfig


@dataclasses.dataclass(frozen=True)
class WorkerCommand:
    """How a worker is started: the copies of the configs it reads, and its index."""

    hyper: Path
    model: Path

    def argv(self, index: int, n_workers: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "aimlutils.hyper_opt.worker",
            str(self.hyper),
            str(self.model),
            "--index",
            str(index),
            "--workers",
            str(n_workers),
        ]


def save_run_configs(cfg: RunConfig) -> WorkerCommand:
    """Write the configs workers read into ``save_path/configs``.

    Workers read these copies, not the user's files, so editing ``model.yml`` while jobs wait in
    the queue cannot give one study two different models. Paths in the copy are absolute.
    """
    folder = cfg.save_path / "configs"
    folder.mkdir(parents=True, exist_ok=True)
    hyper, model = folder / "hyper.yml", folder / "model.yml"
    for path, data in ((hyper, cfg.hyper), (model, cfg.model)):
        tmp = path.with_suffix(".yml.tmp")
        tmp.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        tmp.replace(path)
    return WorkerCommand(hyper, model)


class Launcher(abc.ABC):
    """Starts the workers of a run; local processes, SLURM jobs, or PBS jobs."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg

    @abc.abstractmethod
    def launch(self, n_workers: int) -> int:
        """Start ``n_workers`` workers; returns the process exit code for ``optimize.py``."""

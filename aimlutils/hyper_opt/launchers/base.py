"""What every launcher does: save the run's configs, then start workers somewhere."""

from __future__ import annotations

import abc
import dataclasses
import os
import shlex
import sys
from pathlib import Path

import yaml

from aimlutils.hyper_opt.config import RunConfig
from aimlutils.hyper_opt.paths import StudyPaths


@dataclasses.dataclass(frozen=True)
class WorkerCommand:
    """How a worker is started: the copies of the configs it reads, its index and the worker count."""

    hyper: Path
    model: Path

    @classmethod
    def of(cls, paths: StudyPaths) -> WorkerCommand:
        return cls(paths.hyper_copy, paths.model_copy)

    def argv(self, index: int | str, n_workers: int, python: str = sys.executable) -> list[str]:
        """The command line; ``index`` may be a shell expression for a job script."""
        return [
            python,
            "-m",
            "aimlutils.hyper_opt.worker",
            str(self.hyper),
            str(self.model),
            "--index",
            str(index),
            "--workers",
            str(n_workers),
        ]

    def shell(self, index_expression: str, n_workers: int, python: str) -> str:
        """The command line for a job script, the worker's index computed by the shell."""
        words = [shlex.quote(w) for w in self.argv(0, n_workers, python)]
        words[words.index("--index") + 1] = index_expression
        return " ".join(words)


def save_run_configs(cfg: RunConfig) -> WorkerCommand:
    """Write the configs workers read into ``save_path/configs``.

    Workers read these copies, not the user's files, so editing ``model.yml`` while jobs wait in
    the queue cannot give one study two different models. Paths in the copy are absolute.
    """
    paths = cfg.paths
    # A password written inline in hyper.yml is not in the copy (its URL names
    # ${AIMLUTILS_STORAGE_PASSWORD}): local workers, the proxy and batch jobs take it from the
    # environment they inherit from this process.
    os.environ.update(cfg.storage.environment())
    paths.configs.mkdir(parents=True, exist_ok=True)
    for path, data in ((paths.hyper_copy, cfg.hyper), (paths.model_copy, cfg.model)):
        tmp = path.with_suffix(".yml.tmp")
        tmp.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        tmp.replace(path)
    return WorkerCommand.of(paths)


class Launcher(abc.ABC):
    """Starts the workers of a run: local processes, or batch jobs of a scheduler.

    A subclass may assume ``cfg`` is checked and the study exists; :meth:`launch` saves the
    configs workers read (:func:`save_run_configs`) before starting any of them.
    """

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg

    @abc.abstractmethod
    def launch(self, n_workers: int) -> int:
        """Start ``n_workers`` workers; returns the process exit code for ``optimize.py``."""

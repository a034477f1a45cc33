"""Checkpoint retention (``optuna.checkpoints.keep_best``): what a study keeps of its trials'
checkpoint folders, ``save_path/checkpoints/trial_<origin>`` (one per chain of trials).

After each trial a worker ends COMPLETE or PRUNED, it removes the folders of finished chains that
are no longer worth their space: a pruned chain's at once, and a completed chain's once it is not
among the ``keep_best`` best completed trials (a chain that drops out of the best loses its
folder then). A chain that still runs, or waits to be continued (its last trial interrupted and
its parameters queued again), is never touched: only chains whose trial ended COMPLETE or PRUNED
are finished, and those are never continued. With several metrics, the best are the Pareto
front's first ``keep_best`` trials by number.

Removal is safe between workers: a folder is renamed first (one worker wins), then measured and
deleted, and a line ``<origin> <bytes>`` is appended to ``checkpoints/removed.log``, from which
``status`` and the report say how much was freed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from aimlutils.hyper_opt.coordination.records import origin_of
from aimlutils.hyper_opt.paths import StudyPaths

logger = logging.getLogger(__name__)

_FOLDER_PREFIX = "trial_"
REMOVED_LOG = "removed.log"


def folder_bytes(folder: Path) -> int:
    """The bytes of the files under ``folder`` (0 when it is gone)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def best_trials(study: optuna.Study, trials: list[FrozenTrial], keep: int) -> set[int]:
    """The numbers of the ``keep`` best completed trials (the Pareto front's first, with several
    metrics)."""
    if keep <= 0:
        return set()
    if len(study.directions) > 1:
        return {t.number for t in sorted(study.best_trials, key=lambda t: t.number)[:keep]}
    sign = 1.0 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1.0
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return {t.number for t in sorted(done, key=lambda t: (sign * float(t.value or 0.0), t.number))[:keep]}


class CheckpointRetention:
    """Removes finished chains' checkpoint folders beyond the ``keep_best`` best (``None``: keep all)."""

    def __init__(self, study: optuna.Study, paths: StudyPaths, keep_best: int | None) -> None:
        self.study = study
        self.paths = paths
        self.keep_best = keep_best

    def tidy(self) -> int:
        """Remove what is not kept now; returns the bytes freed by this call."""
        if self.keep_best is None:
            return 0
        try:
            present = [p for p in self.paths.checkpoints.iterdir() if p.name.startswith(_FOLDER_PREFIX)]
        except FileNotFoundError:
            return 0
        if not present:
            return 0
        trials = self.study.get_trials(deepcopy=False)
        finished: dict[int, FrozenTrial] = {}
        for t in trials:
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
                finished[origin_of(t)] = t
        best = best_trials(self.study, trials, self.keep_best)
        freed = 0
        for folder in present:
            suffix = folder.name[len(_FOLDER_PREFIX) :]
            end = finished.get(int(suffix)) if suffix.isdigit() else None
            if end is None or end.number in best:
                continue  # running, waiting to be continued, failed for good, or among the best
            freed += self._remove(folder, int(suffix), end)
        return freed

    def _remove(self, folder: Path, origin: int, end: FrozenTrial) -> int:
        doomed = folder.with_name(f".removing-{folder.name}-{os.getpid()}")
        try:
            folder.rename(doomed)
        except OSError:
            return 0  # another worker took it
        size = folder_bytes(doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        line = f"{origin} {size}\n".encode()
        fd = os.open(self.paths.checkpoints / REMOVED_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            os.write(fd, line)  # one short append: whole, even with other writers
        finally:
            os.close(fd)
        why = "pruned" if end.state == TrialState.PRUNED else f"not among the {self.keep_best} best"
        logger.info("removed the checkpoints of trial %d's chain (%s): %d bytes", origin, why, size)
        return size


def checkpoint_space(paths: StudyPaths) -> tuple[int, int]:
    """``(bytes the study's checkpoints hold now, bytes removed so far)``."""
    held = sum(folder_bytes(p) for p in paths.checkpoints.glob(f"{_FOLDER_PREFIX}*"))
    freed = 0
    with contextlib.suppress(OSError):
        for line in (paths.checkpoints / REMOVED_LOG).read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                freed += int(parts[1])
    return held, freed

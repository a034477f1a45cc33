"""Creating or reloading the one study that many workers share, each with its own sampler."""

from __future__ import annotations

import json
import logging
import os

import optuna
from optuna.storages import BaseStorage

from aimlutils.hyper_opt.config import RunConfig
from aimlutils.hyper_opt.errors import HyperOptError
from aimlutils.hyper_opt.search_space import grid, samplers
from aimlutils.hyper_opt.storage import study_exists
from aimlutils.hyper_opt.storage.locks import FileLock

#: Study user attribute: the ``optuna.metric`` names, for reports.
METRICS_ATTR = "metrics"

logger = logging.getLogger(__name__)


class StudyExistsError(HyperOptError, RuntimeError):
    """A study of that name exists and ``reload`` is off."""


def _directions(study: optuna.Study) -> list[str]:
    return [d.name.lower() for d in study.directions]


def create_or_load(cfg: RunConfig, storage: BaseStorage, n_workers: int) -> tuple[optuna.Study, bool]:
    """The study for this run, created when new; returns ``(study, reloaded)``.

    An existing study with trials needs ``reload: 1``; one with no trials (made beforehand with
    ``optuna create-study``, say) is simply used.
    """
    # Under a lock of its own: two optimize.py of one study at once (a user, a cron job) see each
    # other, so one creates it and the other loads it, and grid points are queued once. Not the
    # claim lock, which a worker holds while it waits out an outage (a storage proxy that died,
    # which this very run may be about to start again).
    cfg.save_path.mkdir(parents=True, exist_ok=True)
    with FileLock(cfg.paths.setup_lock):
        return _create_or_load(cfg, storage, n_workers)


def _create_or_load(cfg: RunConfig, storage: BaseStorage, n_workers: int) -> tuple[optuna.Study, bool]:
    name = cfg.study_name
    if not study_exists(storage, name):
        try:
            return _create(cfg, storage, n_workers), False
        except optuna.exceptions.DuplicatedStudyError:
            pass  # made meanwhile by a process outside this save_path (optuna create-study)
    study = load(cfg, storage, n_workers)
    if _directions(study) != list(cfg.directions):
        raise StudyExistsError(
            f"study {name!r} in {cfg.storage} optimizes {_directions(study)}, but "
            f"optuna.direction is {list(cfg.directions)}; fix optuna.direction or use another optuna.name"
        )
    n_existing = len(study.get_trials(deepcopy=False))
    if n_existing and not cfg.optuna.reload:
        raise StudyExistsError(
            f"study {name!r} already exists in {cfg.storage} with {n_existing} trials; set "
            "optuna.reload: 1 to continue it, or choose another optuna.name to start afresh"
        )
    _enqueue(study, cfg)
    if n_existing and cfg.paths.stopped.exists():
        # Run again after the failure budget stopped it: the user says the objective is fixed
        # (if not, the next failure stops it again, its streak unbroken).
        logger.warning("study %r had stopped (%s); running it again", name, cfg.paths.stopped)
        cfg.paths.stopped.unlink(missing_ok=True)
    return study, bool(n_existing)


def _create(cfg: RunConfig, storage: BaseStorage, n_workers: int) -> optuna.Study:
    study = optuna.create_study(
        study_name=cfg.study_name,
        storage=storage,
        directions=[optuna.study.StudyDirection[d.upper()] for d in cfg.directions],
        sampler=_sampler(cfg, n_workers, 0),
        pruner=_pruner(cfg),
    )
    study.set_user_attr(METRICS_ATTR, list(cfg.metrics))
    _enqueue(study, cfg)
    return study


def load(cfg: RunConfig, storage: BaseStorage, n_workers: int, worker_index: int = 0) -> optuna.Study:
    """Load the study with this worker's own sampler and pruner."""
    return optuna.load_study(
        study_name=cfg.study_name,
        storage=storage,
        sampler=_sampler(cfg, n_workers, worker_index),
        pruner=_pruner(cfg),
    )


def _sampler(cfg: RunConfig, n_workers: int, worker_index: int) -> optuna.samplers.BaseSampler:
    spec = grid.with_grid(samplers.sampler_spec(cfg.optuna.sampler, n_workers, worker_index), cfg.space)
    sampler, problems = samplers.build("sampler", spec, "optuna.sampler")
    if sampler is None:  # already checked with the config; only reachable on a changed Optuna
        raise ValueError("; ".join(map(str, problems)))
    return sampler


def _pruner(cfg: RunConfig) -> optuna.pruners.BasePruner:
    pruner, problems = samplers.build("pruner", samplers.pruner_spec(cfg.optuna.pruner), "optuna.pruner")
    if pruner is None:
        raise ValueError("; ".join(map(str, problems)))
    return pruner


def _enqueue(study: optuna.Study, cfg: RunConfig) -> None:
    for params in cfg.optuna.enqueue:
        study.enqueue_trial(params, skip_if_exists=True)
    if grid.is_grid(cfg.optuna.sampler):
        # Workers pop queued trials one at a time, so no grid point runs twice.
        grid.enqueue_combinations(study, grid.with_grid(cfg.optuna.sampler or {}, cfg.space))


def claim_save_path(cfg: RunConfig) -> None:
    """Make ``save_path`` this study's, or refuse when it is another's: two studies in one folder
    would share configs, owner files and checkpoint folders.

    Raises:
        StudyExistsError: naming the study that has it.
    """
    record = cfg.paths.study_record
    mine = {"study": cfg.study_name, "storage": str(cfg.storage)}
    try:
        theirs = json.loads(record.read_text())
    except FileNotFoundError:
        theirs = None
    except (OSError, ValueError):
        theirs = None  # unreadable: taken afresh below
    if isinstance(theirs, dict) and theirs.get("study") != mine["study"]:
        raise StudyExistsError(
            f"optuna.save_path: {cfg.save_path} holds study {theirs.get('study')!r} "
            f"({theirs.get('storage')}); a save_path holds one study. Choose another optuna.save_path, "
            f"or optuna.name: {theirs.get('study')} to continue that one"
        )
    if theirs != mine:
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_name(f".{record.name}.{os.getpid()}")
        tmp.write_text(json.dumps(mine))
        tmp.replace(record)

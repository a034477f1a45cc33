"""Creating, reloading and sharing one study among many workers, and its global trial budget."""

from __future__ import annotations

import datetime
import fcntl
import logging
from collections.abc import Callable
from pathlib import Path
from typing import IO

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from aimlutils.hyper_opt import grid, samplers
from aimlutils.hyper_opt.config import RunConfig
from aimlutils.hyper_opt.liveness import Liveness, QueueQuery
from aimlutils.hyper_opt.results import ResultsCsv, trial_row
from aimlutils.hyper_opt.storage import study_exists
from aimlutils.hyper_opt.trial_record import RECORD_ATTR, RETRIES_ATTR, RETRY_OF_ATTR, RunningTrials

logger = logging.getLogger(__name__)

#: A RUNNING trial with no owner for this long lost its worker right after creating it.
ORPHAN_AFTER_S = 120.0
#: Study user attribute: the ``optuna.metric`` names, for reports.
METRICS_ATTR = "metrics"


class StudyExistsError(RuntimeError):
    """A study of that name exists and ``reload`` is off."""


def _directions(study: optuna.Study) -> list[str]:
    return [d.name.lower() for d in study.directions]


def create_or_load(cfg: RunConfig, storage: BaseStorage, n_workers: int) -> tuple[optuna.Study, bool]:
    """The study for this run, created when new; returns ``(study, reloaded)``.

    An existing study with trials needs ``reload: 1``; one with no trials (made beforehand with
    ``optuna create-study``, say) is simply used.
    """
    name = cfg.study_name
    if study_exists(storage, name):
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
        return study, bool(n_existing)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        directions=[optuna.study.StudyDirection[d.upper()] for d in cfg.directions],
        sampler=_sampler(cfg, n_workers, 0),
        pruner=_pruner(cfg),
    )
    study.set_user_attr(METRICS_ATTR, list(cfg.metrics))
    _enqueue(study, cfg)
    return study, False


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


def target_trial(study: optuna.Study, target: float | None) -> FrozenTrial | None:
    """The first trial (by completion) whose value reaches ``target`` in the study's direction.

    Example:
        >>> study = optuna.create_study()
        >>> study.add_trial(optuna.trial.create_trial(value=0.5))
        >>> target_trial(study, 0.6).number
        0
    """
    if target is None or len(study.directions) != 1:
        return None
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    reached = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and (t.value >= target if maximize else t.value <= target)
    ]
    return min(reached, key=lambda t: (t.datetime_complete or datetime.datetime.max, t.number), default=None)


def count(trials: list[FrozenTrial]) -> dict[TrialState, int]:
    out = dict.fromkeys(TrialState, 0)
    for t in trials:
        out[t.state] += 1
    return out


class ClaimLock:
    """An exclusive POSIX lock on a file in ``save_path``, held from budget check to new trial.

    ``lockf`` locks hold across the nodes of a cluster on NFS, where ``flock`` may not.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[bytes] | None = None
        self.held = False

    def acquire(self) -> None:
        if self._fh is None:
            self._fh = open(self.path, "a+b")  # noqa: SIM115 - kept open for the worker's life
        if not self.held:
            fcntl.lockf(self._fh, fcntl.LOCK_EX)
            self.held = True

    def release(self) -> None:
        if self._fh is not None and self.held:
            fcntl.lockf(self._fh, fcntl.LOCK_UN)
            self.held = False


class TrialBudget:
    """Keeps the study's COMPLETE + PRUNED trials at exactly ``n_trials``, however many workers.

    Before asking for a trial a worker waits while finished plus running trials already fill the
    budget (a running trial may still fail and free its place); the check and the ask happen under
    a lock file so two workers rarely ask for the last place together. Exactness does not rest on
    the lock: a trial numbered ``n_trials`` or higher runs only if the trials numbered before it,
    which every worker sees, plus those finished leave room, so of two racing trials the lower
    number wins. Trials numbered below ``n_trials`` always fit, since there are only ``n_trials``
    of them; checking them costs nothing, which keeps the common case cheap.
    """

    def __init__(
        self,
        study: optuna.Study,
        storage: BaseStorage,
        n_trials: int,
        recover: Callable[[list[FrozenTrial]], None] | None = None,
        target: float | None = None,
    ) -> None:
        self.study = study
        self.storage = storage
        self.n_trials = n_trials
        self.recover = recover
        self.target = target
        self._study_id = storage.get_study_id_from_name(study.study_name)

    def _trials(self) -> list[FrozenTrial]:
        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        return self.study.get_trials(deepcopy=False, states=states)

    def _fewer_trials_than_budget(self) -> bool:
        try:
            self.storage.get_trial_id_from_study_id_trial_number(self._study_id, self.n_trials - 1)
        except KeyError:
            return True
        return False

    def has_room(self) -> bool | None:
        """``True``: a trial may start; ``False``: the budget is spent or the target met;
        ``None``: wait and retry."""
        if self.target is not None and target_trial(self.study, self.target) is not None:
            return False
        if self._fewer_trials_than_budget():
            return True
        trials = self._trials()
        counts = count(trials)
        done = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
        if done >= self.n_trials:
            return False
        if done + counts[TrialState.RUNNING] < self.n_trials:
            return True
        if self.recover is not None:
            self.recover([t for t in trials if t.state == TrialState.RUNNING])
        return None

    def admits(self, number: int) -> bool:
        """Whether the freshly asked trial ``number`` fits in the budget."""
        if number < self.n_trials:
            return True
        ahead = sum(1 for t in self._trials() if t.state != TrialState.RUNNING or t.number < number)
        return ahead < self.n_trials


def requeue(study: optuna.Study, trial: FrozenTrial | optuna.Trial, max_retries: int) -> bool:
    """Queue ``trial``'s parameters again, unless they were already retried ``max_retries`` times.

    Idempotent: a worker killed between queueing its interrupted trial and failing it leaves the
    trial RUNNING, and the sweep that fails it later must not queue the parameters twice.
    """
    retries = int(trial.user_attrs.get(RETRIES_ATTR, 0))
    if retries >= max_retries or not trial.params:
        return False
    if any(t.user_attrs.get(RETRY_OF_ATTR) == trial.number for t in study.get_trials(deepcopy=False)):
        return False
    study.enqueue_trial(trial.params, user_attrs={RETRY_OF_ATTR: trial.number, RETRIES_ATTR: retries + 1})
    return True


def fail_dead_trials(
    study: optuna.Study,
    storage: BaseStorage,
    running: list[FrozenTrial],
    owners: RunningTrials,
    liveness: Liveness,
    max_retries: int = 1,
) -> list[int]:
    """Fail RUNNING trials whose worker is gone and queue their parameters again.

    Journal and Redis storages have no heartbeat, so without this a killed worker's trial would
    stay RUNNING forever and hold a place in the budget. Returns the failed trial numbers.
    """
    failed = []
    for trial in running:
        owner = owners.owner(trial.number)
        if owner is None:
            # A worker marks its trial within milliseconds of creating it; a trial unmarked for
            # minutes lost its worker in between (a kill -9 at that moment).
            started = trial.datetime_start or datetime.datetime.now()
            if (datetime.datetime.now() - started).total_seconds() < ORPHAN_AFTER_S:
                continue
            owner = {}
            reason = f"no worker took the trial up within {ORPHAN_AFTER_S:.0f} s of its creation"
        elif liveness.is_gone(owner, trial.datetime_start.timestamp() if trial.datetime_start else None):
            where = f"job {owner.get('job_id')}, " if owner.get("job_id") else ""
            process = f"worker process {owner.get('pid')} ({where}host {owner.get('host')})"
            reason = f"{process} ended during the trial"
        else:
            continue
        record = {"worker": owner, "fail_reason": reason}
        try:
            storage.set_trial_user_attr(trial._trial_id, RECORD_ATTR, record)
            study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, RuntimeError):  # it has finished since it was listed, or was failed first
            continue
        owners.clear(trial.number)
        logger.warning("trial %d failed: %s", trial.number, reason)
        requeue(study, trial, max_retries)
        failed.append(trial.number)
    return failed


def sweep_dead_trials(
    cfg: RunConfig,
    study: optuna.Study,
    storage: BaseStorage,
    queue: QueueQuery | None,
    max_retries: int | None = None,
) -> list[int]:
    """Fail the RUNNING trials whose worker or job is gone (one queue query), re-queue their
    parameters, and give each its CSV row. Returns the failed trial numbers."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return []
    owners = RunningTrials(cfg.save_path / "running")
    retries = cfg.optuna.max_retries if max_retries is None else max_retries
    failed = fail_dead_trials(study, storage, running, owners, Liveness(queue, min_interval_s=0), retries)
    if failed:
        with ResultsCsv(cfg.csv_path) as out:
            for number in failed:
                out.append(trial_row(study.get_trials(deepcopy=False)[number]))
    return failed

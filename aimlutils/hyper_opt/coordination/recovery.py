"""Trials of dead workers: failed, their parameters queued again, so no place in the budget is held
by a worker that is gone.

Journal and Redis storages have no heartbeat, so without this a killed worker's trial would stay
RUNNING forever.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from aimlutils.hyper_opt.coordination.liveness import JobAlive, Liveness, QueueQuery, alive
from aimlutils.hyper_opt.coordination.owners import RunningTrials
from aimlutils.hyper_opt.coordination.records import (
    ORIGIN_ATTR,
    RECORD_ATTR,
    RETRIES_ATTR,
    RETRY_OF_ATTR,
    origin_of,
)
from aimlutils.hyper_opt.coordination.results_csv import ResultsCsv, trial_row
from aimlutils.hyper_opt.paths import StudyPaths

logger = logging.getLogger(__name__)

#: A RUNNING trial with no owner for this long lost its worker right after creating it.
ORPHAN_AFTER_S = 120.0


def requeue(study: optuna.Study, trial: FrozenTrial | optuna.Trial, max_retries: int) -> bool:
    """Queue ``trial``'s parameters again, unless they were already retried ``max_retries`` times.

    The queued trial continues ``trial`` (its ``retry_of``): same checkpoint directory, and
    ``trial``'s intermediate values (:func:`continue_trial`). A retry counts against
    ``max_retries`` only when ``trial`` made no progress (reported no step its chain had not), so a
    trial longer than a job's time limit is continued job after job, while one that dies each time
    before reaching anything new is given up. ``max_retries: 0`` never queues.

    Idempotent: a worker killed between queueing its interrupted trial and failing it leaves the
    trial RUNNING, and the sweep that fails it later must not queue the parameters twice.
    """
    retries = int(trial.user_attrs.get(RETRIES_ATTR, 0))
    if max_retries <= 0 or retries >= max_retries or not trial.params:
        return False
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if any(t.user_attrs.get(RETRY_OF_ATTR) == trial.number for t in trials.values()):
        return False
    stored = trials.get(trial.number)
    steps = set(stored.intermediate_values) if stored is not None else set()
    before = trials.get(trial.user_attrs.get(RETRY_OF_ATTR, -1))
    progressed = bool(steps - set(before.intermediate_values if before is not None else ()))
    attrs: dict[str, Any] = {RETRY_OF_ATTR: trial.number, RETRIES_ATTR: retries + (0 if progressed else 1)}
    origin = origin_of(trial)
    if origin != trial.number:
        attrs[ORIGIN_ATTR] = origin
    study.enqueue_trial(trial.params, user_attrs=attrs)
    return True


def inherited_values(study: optuna.Study, trial: FrozenTrial | optuna.Trial) -> dict[int, float]:
    """The intermediate values of the trials ``trial`` continues, by step (the latest trial's
    value where two reported the same step)."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    values: dict[int, float] = {}
    number, seen = trial.user_attrs.get(RETRY_OF_ATTR), set()
    while isinstance(number, int) and number in trials and number not in seen:
        seen.add(number)
        for step, value in trials[number].intermediate_values.items():
            values.setdefault(step, value)
        number = trials[number].user_attrs.get(RETRY_OF_ATTR)
    return values


def continue_trial(study: optuna.Study, trial: optuna.Trial) -> int:
    """Report the values of the trials ``trial`` continues, so the pruner sees one learning curve.

    Nothing happens for a trial that continues none, or in a study of several metrics (Optuna
    prunes single-objective studies only). Returns the number of values reported.
    """
    if RETRY_OF_ATTR not in trial.user_attrs or len(study.directions) != 1:
        return 0
    values = inherited_values(study, trial)
    for step in sorted(values):
        trial.report(values[step], step)
    return len(values)


def _why_dead(
    trial: FrozenTrial, owners: RunningTrials, liveness: Liveness
) -> tuple[dict[str, Any], str] | None:
    """The owner of a RUNNING trial and why it is dead; ``None`` while it may be alive."""
    owner = owners.owner(trial.number)
    if owner is None:
        # A worker marks its trial within milliseconds of creating it; a trial unmarked for
        # minutes lost its worker in between (a kill -9 at that moment).
        started = trial.datetime_start or datetime.datetime.now()
        if (datetime.datetime.now() - started).total_seconds() < ORPHAN_AFTER_S:
            return None
        return {}, f"no worker took the trial up within {ORPHAN_AFTER_S:.0f} s of its creation"
    if not liveness.is_gone(owner, trial.datetime_start.timestamp() if trial.datetime_start else None):
        return None
    where = f"job {owner.get('job_id')}, " if owner.get("job_id") else ""
    return (
        owner,
        f"worker process {owner.get('pid')} ({where}host {owner.get('host')}) ended during the trial",
    )


def fail_dead_trials(
    study: optuna.Study,
    storage: BaseStorage,
    running: list[FrozenTrial],
    owners: RunningTrials,
    liveness: Liveness,
    max_retries: int = 1,
) -> list[int]:
    """Fail the ``running`` trials whose worker is gone and queue their parameters again.

    Returns the numbers of the trials this call failed (another worker may fail some first).
    """
    failed = []
    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in running:
        dead = _why_dead(trial, owners, liveness)
        if dead is None:
            continue
        owner, reason = dead
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        # ``running`` was read when the sweep began; a long sweep finds trials whose worker finished
        # them (and removed the owner file) since. A record written to a finished trial fails.
        if storage.get_trial(trial_id).state != TrialState.RUNNING:
            continue
        try:
            storage.set_trial_user_attr(trial_id, RECORD_ATTR, {"worker": owner, "fail_reason": reason})
            # Queued before the trial is failed: failing it frees its place in the budget, and a
            # worker waiting for one would otherwise start a new trial there, not this one again.
            requeue(study, trial, max_retries)
            study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, RuntimeError):  # it has finished since it was listed, or was failed first
            continue
        owners.clear(trial.number)
        logger.warning("trial %d failed: %s", trial.number, reason)
        failed.append(trial.number)
    return failed


def sweep_dead_trials(
    study: optuna.Study,
    storage: BaseStorage,
    owners: RunningTrials,
    liveness: Liveness,
    max_retries: int,
    record: Callable[[FrozenTrial], None],
) -> list[int]:
    """:func:`fail_dead_trials` over every RUNNING trial; ``record`` gets each trial it failed."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return []
    failed = fail_dead_trials(study, storage, running, owners, liveness, max_retries)
    if failed:
        trials = study.get_trials(deepcopy=False)
        for number in failed:
            record(trials[number])
    return failed


def recover_study(
    study: optuna.Study,
    storage: BaseStorage,
    paths: StudyPaths,
    queue: QueueQuery | None,
    max_retries: int,
    job_alive: JobAlive = alive,
) -> list[int]:
    """One sweep from outside the workers (start, reload, status, cancel): the queue is asked now,
    and each failed trial gets its row in ``trial_results.csv``."""
    liveness = Liveness(queue, min_interval_s=0, job_alive=job_alive)
    failed: list[FrozenTrial] = []
    numbers = sweep_dead_trials(study, storage, RunningTrials.of(paths), liveness, max_retries, failed.append)
    if failed:
        with ResultsCsv(paths.results_csv) as out:
            for trial in failed:
                out.append(trial_row(trial))
    return numbers

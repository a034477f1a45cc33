"""Trials of dead workers: failed, their parameters queued again, so no place in the budget is held
by a worker that is gone.

Journal and Redis storages have no heartbeat, so without this a killed worker's trial would stay
RUNNING forever.
"""

from __future__ import annotations

import logging
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from aimlutils.hyper_opt.coordination.lifecycle import TrialLife
from aimlutils.hyper_opt.coordination.liveness import JobAlive, Liveness, QueueQuery, StudyJobs
from aimlutils.hyper_opt.coordination.owners import RunningTrials
from aimlutils.hyper_opt.coordination.results_csv import ResultsCsv
from aimlutils.hyper_opt.paths import StudyPaths
from aimlutils.hyper_opt.schedulers import alive

logger = logging.getLogger(__name__)

#: A RUNNING trial with no owner for this long lost its worker right after creating it.
ORPHAN_AFTER_S = 120.0


def _why_dead(
    trial: FrozenTrial, owners: RunningTrials, liveness: Liveness
) -> tuple[dict[str, Any], str] | None:
    """The owner of a RUNNING trial and why it is dead; ``None`` while it may be alive."""
    owner = owners.owner(trial.number)
    if owner is None:
        # A worker marks its trial within milliseconds of creating it; a trial unmarked for
        # minutes lost its worker in between (a kill -9 at that moment).
        if not liveness.unowned_for(trial.number, ORPHAN_AFTER_S, trial.datetime_start):
            return None
        return {}, f"no worker took the trial up within {ORPHAN_AFTER_S:.0f} s of its creation"
    if not liveness.is_gone(owner, owners.written_at(trial.number)):
        return None
    where = f"job {owner.get('job_id')}, " if owner.get("job_id") else ""
    return (
        owner,
        f"worker process {owner.get('pid')} ({where}host {owner.get('host')}) ended during the trial",
    )


def fail_dead_trials(life: TrialLife, running: list[FrozenTrial], liveness: Liveness) -> list[int]:
    """Fail the ``running`` trials whose worker is gone and queue their parameters again.

    Returns the numbers of the trials this call failed (another worker may fail some first).
    """
    failed = []
    for trial in running:
        dead = _why_dead(trial, life.owners, liveness)
        if dead is not None and life.fail_dead(trial, *dead):
            failed.append(trial.number)
    return failed


def sweep_dead_trials(life: TrialLife, liveness: Liveness) -> list[int]:
    """:func:`fail_dead_trials` over every RUNNING trial of the study."""
    running = life.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return fail_dead_trials(life, running, liveness) if running else []


def recover_study(
    study: optuna.Study,
    storage: BaseStorage,
    paths: StudyPaths,
    queue: QueueQuery | None,
    max_retries: int,
    job_alive: JobAlive = alive,
    study_jobs: StudyJobs | None = None,
) -> list[int]:
    """One sweep from outside the workers (start, reload, status, cancel): the queue is asked now
    (about ``study_jobs``), and each failed trial gets its row in ``trial_results.csv``."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:  # nothing to judge, and no CSV made by a look at a study
        return []
    liveness = Liveness(queue, min_interval_s=0, job_alive=job_alive, study_jobs=study_jobs)
    with ResultsCsv(paths.results_csv) as csv:
        life = TrialLife(study, storage, paths, csv, max_retries=max_retries)
        return fail_dead_trials(life, running, liveness)

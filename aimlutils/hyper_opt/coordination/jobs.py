"""The study's jobs, as ``save_path/jobs.json`` records them: who submitted which, and the queue
asked about them (by status, cancel, a reload and the workers' liveness checks)."""

from __future__ import annotations

import dataclasses
import getpass
import json
import os
from collections.abc import Callable

from aimlutils.hyper_opt.paths import StudyPaths
from aimlutils.hyper_opt.schedulers import Scheduler
from aimlutils.hyper_opt.storage.locks import FileLock


@dataclasses.dataclass(frozen=True)
class JobRecord:
    """A submitted job (or job array) of this study."""

    job_id: str
    workers: int
    script: str
    submitted: str
    role: str = "workers"
    """``workers``, or ``proxy`` for the study's storage proxy."""
    user: str = ""
    """Who submitted it: only they can be sure the scheduler shows it (its ``PrivateData``)."""


def read_jobs(paths: StudyPaths) -> list[JobRecord]:
    """The jobs submitted for the study so far."""
    try:
        data = json.loads(paths.jobs_record.read_text())
    except (OSError, ValueError):
        return []
    return [JobRecord(**item) for item in data]


def append_jobs(paths: StudyPaths, records: list[JobRecord]) -> None:
    """Add ``records`` to ``jobs.json``, under a lock: two ``optimize.py`` of one study may submit
    at once, and neither may drop the other's jobs."""
    with FileLock(paths.jobs_record.with_suffix(".lock")):
        data = [dataclasses.asdict(r) for r in read_jobs(paths) + records]
        tmp = paths.jobs_record.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(paths.jobs_record)


def job_ids(paths: StudyPaths, user: str | None = None) -> list[str]:
    """The ids of the study's jobs that ``user`` (this process's user by default) submitted: the
    ones whose absence from the queue this user can take for their end."""
    me = user if user is not None else getpass.getuser()
    return [r.job_id for r in read_jobs(paths) if r.user in (me, "")]


def study_queue(scheduler: Scheduler, paths: StudyPaths) -> Callable[[], dict[str, str]]:
    """The scheduler's queue, asked about the study's jobs that this user submitted (whoever runs
    the study's command or worker asks the same question)."""
    return lambda: scheduler.queue(job_ids(paths))

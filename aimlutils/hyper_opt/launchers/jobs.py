"""What a study submits: job scripts. The record of its jobs (``jobs.json``) is in
:mod:`aimlutils.hyper_opt.coordination.jobs`, where the workers' liveness checks read it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from aimlutils.hyper_opt.coordination.jobs import JobRecord, append_jobs, job_ids, read_jobs, study_queue

__all__ = ["JobRecord", "JobScript", "append_jobs", "job_ids", "read_jobs", "study_queue"]


@dataclasses.dataclass(frozen=True)
class JobScript:
    """One script and the command that submits it."""

    text: str
    path: Path
    submit: list[str]

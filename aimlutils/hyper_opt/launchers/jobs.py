"""What a study submitted: job scripts, and the record of its jobs in ``save_path/jobs.json``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from aimlutils.hyper_opt.paths import StudyPaths


@dataclasses.dataclass(frozen=True)
class JobScript:
    """One script and the command that submits it."""

    text: str
    path: Path
    submit: list[str]


@dataclasses.dataclass(frozen=True)
class JobRecord:
    """A submitted job (or job array) of this study."""

    job_id: str
    workers: int
    script: str
    submitted: str
    role: str = "workers"
    """``workers``, or ``proxy`` for the study's storage proxy."""


def read_jobs(paths: StudyPaths) -> list[JobRecord]:
    """The jobs submitted for the study so far."""
    try:
        data = json.loads(paths.jobs_record.read_text())
    except (OSError, ValueError):
        return []
    return [JobRecord(**item) for item in data]


def append_jobs(paths: StudyPaths, records: list[JobRecord]) -> None:
    data = [dataclasses.asdict(r) for r in read_jobs(paths) + records]
    tmp = paths.jobs_record.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(paths.jobs_record)

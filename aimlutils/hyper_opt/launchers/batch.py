"""Workers as batch jobs of any scheduler: one job script template, submission, job records.

Each scheduler (:mod:`aimlutils.hyper_opt.schedulers`) only writes its header lines and knows its
commands, like dask-jobqueue's job classes; the script body, which starts one worker per GPU of
the job's allocation, lives here once.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import shlex
import sys
from pathlib import Path

from aimlutils.hyper_opt.config import RunConfig
from aimlutils.hyper_opt.launchers.base import Launcher, WorkerCommand, save_run_configs
from aimlutils.hyper_opt.paths import StudyPaths
from aimlutils.hyper_opt.schedulers import Scheduler, get


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


def read_jobs(paths: StudyPaths) -> list[JobRecord]:
    """The jobs submitted for the study so far."""
    try:
        data = json.loads(paths.jobs_record.read_text())
    except (OSError, ValueError):
        return []
    return [JobRecord(**item) for item in data]


def _append_jobs(paths: StudyPaths, records: list[JobRecord]) -> None:
    data = [dataclasses.asdict(r) for r in read_jobs(paths) + records]
    tmp = paths.jobs_record.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(paths.jobs_record)


class BatchLauncher(Launcher):
    """Submits workers as batch jobs of ``scheduler``."""

    def __init__(self, cfg: RunConfig, scheduler: Scheduler, base_dir: Path | None = None) -> None:
        super().__init__(cfg)
        self.scheduler = scheduler
        self.section = scheduler.section
        self.base_dir = base_dir or Path.cwd()
        self.jobs_dir = cfg.paths.jobs
        self.submitted: list[JobRecord] = []

    @property
    def workers_per_job(self) -> int:
        return self.scheduler.workers_per_job

    def jobs_for(self, n_workers: int) -> int:
        """How many jobs give ``n_workers`` workers, at most ``jobs``."""
        return max(1, min(self.section.jobs, math.ceil(n_workers / self.workers_per_job)))

    def python(self) -> str:
        # With `kernel` lines the job activates its own environment; else use this interpreter.
        return "python" if self.section.kernel else sys.executable

    def script_text(self, n_jobs: int, command: WorkerCommand) -> str:
        per_job = self.workers_per_job
        kernel = self.section.kernel
        setup = list(self.section.bash) + (kernel if isinstance(kernel, list) else [kernel] if kernel else [])
        worker = command.shell(f"$((job_index * {per_job} + i))", n_jobs * per_job, self.python())
        lines = [
            "#!/bin/bash -l",
            *self.scheduler.header(n_jobs, self.jobs_dir),
            "",
            f"# Study {self.cfg.study_name!r}: {per_job} worker(s) in this job, each on one GPU of its",
            "# allocation when it has GPUs. Written by aimlutils-optimize.",
            *setup,
            "set -u",
            *self.scheduler.prologue(self.base_dir),
            'IFS=, read -r -a gpus <<< "${CUDA_VISIBLE_DEVICES:-}"',
            "pids=()",
            f"for ((i = 0; i < {per_job}; i++)); do",
            '    if ((${#gpus[@]})); then export CUDA_VISIBLE_DEVICES="${gpus[i % ${#gpus[@]}]}"; fi',
            f"    {worker} &",
            "    pids+=($!)",
            "done",
            "# SIGTERM (scancel, time limit, preemption) or a --signal: each worker fails the trial it",
            "# runs, queues its parameters again, and exits.",
            "trap 'kill -TERM \"${pids[@]}\" 2>/dev/null' TERM USR1",
            "wait",
            "wait",
            "",
        ]
        return "\n".join(lines)

    def plan(self, n_workers: int, command: WorkerCommand | None = None) -> JobScript:
        """The script and submit command(s) for ``n_workers`` workers, without submitting."""
        command = command or WorkerCommand.of(self.cfg.paths)
        n_jobs = self.jobs_for(n_workers)
        path = self.jobs_dir / f"{self.scheduler.name}-{datetime.datetime.now():%Y%m%d-%H%M%S-%f}.sh"
        text = self.script_text(n_jobs, command)
        submit = self.scheduler.submissions(path, n_jobs)
        return JobScript(text, path, [shlex.join(c) for c in submit])

    def launch(self, n_workers: int) -> int:
        command = save_run_configs(self.cfg)
        job = self.plan(n_workers, command)
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        job.path.write_text(job.text)
        records = []
        now = datetime.datetime.now().isoformat(timespec="seconds")
        n_jobs = self.jobs_for(n_workers)
        per_submit = self.workers_per_job * (n_jobs if len(job.submit) == 1 else 1)
        for submit in job.submit:
            stdout = self.scheduler.run(shlex.split(submit))
            records.append(JobRecord(self.scheduler.parse_job_id(stdout), per_submit, str(job.path), now))
        _append_jobs(self.cfg.paths, records)
        self.submitted = records
        return 0


def batch_launcher(cfg: RunConfig, base_dir: Path | None = None) -> BatchLauncher | None:
    """The launcher for the scheduler section of ``cfg``, or ``None`` without one."""
    scheduler = scheduler_for(cfg)
    return BatchLauncher(cfg, scheduler, base_dir) if scheduler is not None else None


def scheduler_for(cfg: RunConfig) -> Scheduler | None:
    """The scheduler that ``cfg``'s section names, set up with it; ``None`` without one."""
    if cfg.scheduler is None:
        return None
    name, section = cfg.scheduler
    return get(name)(section, cfg.save_path)

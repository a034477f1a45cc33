"""What SLURM and PBS launchers share: one job script template, submission, job records.

Each scheduler subclass only writes its header lines and knows its commands (like
dask-jobqueue's job classes); the script body, which starts one worker per GPU of the job's
allocation, lives here once.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime
import json
import math
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from aimlutils.hyper_opt.config import RunConfig
from aimlutils.hyper_opt.config.schema import SchedulerSection
from aimlutils.hyper_opt.launchers.base import Launcher, WorkerCommand, save_run_configs

#: Where the ids of submitted jobs are kept, for ``status``, ``cancel`` and reloads.
JOBS_FILE = "jobs.json"


class SubmitError(RuntimeError):
    """A scheduler command failed; carries the command, exit code, stdout and stderr."""

    def __init__(self, command: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.command, self.returncode, self.stdout, self.stderr = list(command), returncode, stdout, stderr
        super().__init__(
            f"{shlex.join(command)} failed with exit code {returncode}\n"
            f"stdout: {stdout.strip() or '(empty)'}\nstderr: {stderr.strip() or '(empty)'}"
        )


def run_scheduler_command(command: Sequence[str], timeout: float = 60) -> str:
    """Run a scheduler command; its stdout, or :class:`SubmitError` with everything it said."""
    try:
        proc = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SubmitError(command, -1, "", str(err)) from err
    if proc.returncode != 0:
        raise SubmitError(command, proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout


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


def read_jobs(save_path: Path) -> list[JobRecord]:
    try:
        data = json.loads((save_path / JOBS_FILE).read_text())
    except (OSError, ValueError):
        return []
    return [JobRecord(**item) for item in data]


def _append_jobs(save_path: Path, records: list[JobRecord]) -> None:
    path = save_path / JOBS_FILE
    data = [dataclasses.asdict(r) for r in read_jobs(save_path) + records]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


class BatchLauncher(Launcher):
    """Submits workers as batch jobs; subclasses supply the header and the commands."""

    name = ""
    directive = ""
    submit_command: tuple[str, ...] = ()

    def __init__(self, cfg: RunConfig, section: SchedulerSection, base_dir: Path | None = None) -> None:
        super().__init__(cfg)
        self.section = section
        self.base_dir = base_dir or Path.cwd()
        self.jobs_dir = cfg.save_path / "jobs"

    @property
    def workers_per_job(self) -> int:
        """GPUs per job times workers per GPU (``tasks_per_worker``, echo-opt's ``trials_per_job``)."""
        per_gpu = self.section.tasks_per_worker
        if per_gpu == 1 and self.section.trials_per_job:
            per_gpu = self.section.trials_per_job
        return (self.section.gpus_per_node or 1) * per_gpu

    def jobs_for(self, n_workers: int) -> int:
        """How many jobs give ``n_workers`` workers, at most ``jobs``."""
        return max(1, min(self.section.jobs, math.ceil(n_workers / self.workers_per_job)))

    def option_lines(self) -> list[str]:
        """``#SBATCH -x value`` for one-letter keys, ``--key=value`` for longer ones."""
        lines = []
        for key, value in self.section.batch.items():
            for item in value if isinstance(value, list) else [value]:
                text = self.output_path(str(item)) if key in ("o", "e", "output", "error") else str(item)
                flag = f"-{key} {text}" if len(key) == 1 else f"--{key}={text}"
                lines.append(f"{self.directive} {flag}")
        return lines

    def output_path(self, value: str) -> str:
        """Output files are relative to ``save_path``, as in the original package."""
        path = Path(value)
        return str(path if path.is_absolute() or value.startswith("/dev/") else self.cfg.save_path / path)

    @abc.abstractmethod
    def header(self, n_jobs: int) -> list[str]:
        """The scheduler directives of a script that runs ``n_jobs`` jobs."""

    @abc.abstractmethod
    def submissions(self, script: Path, n_jobs: int) -> list[list[str]]:
        """The submit command(s) for ``n_jobs`` jobs of ``script``."""

    @abc.abstractmethod
    def parse_job_id(self, stdout: str) -> str:
        """The job id in the submit command's output."""

    def prologue(self) -> list[str]:
        """Lines run before the workers start (scheduler specifics go here)."""
        return []

    def python(self) -> str:
        # With `kernel` lines the job activates its own environment; else use this interpreter.
        return "python" if self.section.kernel else shlex.quote(sys.executable)

    def script_text(self, n_jobs: int, command: WorkerCommand) -> str:
        per_job = self.workers_per_job
        kernel = self.section.kernel
        setup = list(self.section.bash) + (kernel if isinstance(kernel, list) else [kernel] if kernel else [])
        worker = (
            f"{self.python()} -m aimlutils.hyper_opt.worker {shlex.quote(str(command.hyper))} "
            f"{shlex.quote(str(command.model))} --index $((job_index * {per_job} + i)) "
            f"--workers {n_jobs * per_job}"
        )
        lines = [
            "#!/bin/bash -l",
            *self.header(n_jobs),
            "",
            f"# Study {self.cfg.study_name!r}: {per_job} worker(s) in this job, each on one GPU of its",
            "# allocation when it has GPUs. Written by aimlutils-optimize.",
            *setup,
            "set -u",
            *self.prologue(),
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
        command = command or WorkerCommand(
            self.cfg.save_path / "configs/hyper.yml", self.cfg.save_path / "configs/model.yml"
        )
        n_jobs = self.jobs_for(n_workers)
        path = self.jobs_dir / f"{self.name}-{datetime.datetime.now():%Y%m%d-%H%M%S-%f}.sh"
        text = self.script_text(n_jobs, command)
        submit = self.submissions(path, n_jobs)
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
            stdout = run_scheduler_command(shlex.split(submit))
            records.append(JobRecord(self.parse_job_id(stdout), per_submit, str(job.path), now))
        _append_jobs(self.cfg.save_path, records)
        self.submitted = records
        return 0

    # The queue, for status, cancel and finding dead trials.

    @abc.abstractmethod
    def queue(self) -> dict[str, str]:
        """``{job id: state}`` of this user's queued and running jobs, in one scheduler call."""

    @abc.abstractmethod
    def cancel(self, job_ids: Sequence[str]) -> None:
        """Cancel the jobs, in one scheduler call."""

"""Workers as batch jobs of any scheduler: one job script template, submission, job records.

Each scheduler (:mod:`aimlutils.hyper_opt.schedulers`) only writes its header lines and knows its
commands, like dask-jobqueue's job classes; the script body, which starts one worker per
``gpus_per_trial`` GPUs of the job's allocation, lives here once.
"""

from __future__ import annotations

import datetime
import getpass
import math
import shlex
import sys
from pathlib import Path

from aimlutils.hyper_opt.config import RunConfig
from aimlutils.hyper_opt.coordination import BadNodes
from aimlutils.hyper_opt.launchers.base import Launcher, WorkerCommand, save_run_configs
from aimlutils.hyper_opt.launchers.jobs import JobRecord, JobScript, append_jobs
from aimlutils.hyper_opt.launchers.proxy_job import live_proxy_job, proxy_job
from aimlutils.hyper_opt.schedulers import Scheduler, get
from aimlutils.hyper_opt.stop import LEFT_FOR_LATER_EXIT_CODE


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

    def setup_lines(self) -> list[str]:
        """The section's ``bash`` lines, then its ``kernel`` (environment activation) lines."""
        kernel = self.section.kernel
        return list(self.section.bash) + (kernel if isinstance(kernel, list) else [kernel] if kernel else [])

    def script_text(self, n_jobs: int, command: WorkerCommand) -> str:
        per_job = self.workers_per_job
        per_trial = self.scheduler.gpus_per_trial
        setup = self.setup_lines()
        worker = command.shell(f"$((job_index * {per_job} + i))", n_jobs * per_job, self.python())
        each = "one GPU" if per_trial == 1 else f"{per_trial} GPUs"
        lines = [
            "#!/bin/bash -l",
            *self.scheduler.header(n_jobs, self.jobs_dir),
            "",
            f"# Study {self.cfg.study_name!r}: {per_job} worker(s) in this job, each on {each} of its",
            "# allocation when it has GPUs. Written by aimlutils-optimize.",
            *setup,
            "set -u",
            "pids=() stopped=no left=no",
            f"bad_nodes={self.bad_nodes_file()}  # the study's nodes marked bad, a line each",
            "# SIGUSR1 (the warning before the time limit): each worker's trial may save a checkpoint",
            "# and leave. SIGTERM (scancel, time limit, preemption): each worker fails the trial it runs,",
            "# queues its parameters again (to continue it), and exits.",
            "trap 'kill -USR1 \"${pids[@]}\" 2>/dev/null' USR1",
            "trap 'stopped=yes; kill -TERM \"${pids[@]}\" 2>/dev/null' TERM",
            *self.scheduler.prologue(self.base_dir),
            'IFS=, read -r -a gpus <<< "${CUDA_VISIBLE_DEVICES:-}"',
            f"for ((i = 0; i < {per_job}; i++)); do",
            *_pin_gpus(per_trial),
            f"    {worker} &",
            "    pids+=($!)",
            "done",
            *_WAIT_FOR_WORKERS,
            *self.scheduler.epilogue(),
            "",
        ]
        return "\n".join(lines)

    def plan(self, n_workers: int, command: WorkerCommand | None = None) -> JobScript:
        """The script and submit command(s) for ``n_workers`` workers, without submitting."""
        command = command or WorkerCommand.of(self.cfg.paths)
        n_jobs = self.jobs_for(n_workers)
        path = self.jobs_dir / f"{self.scheduler.name}-{datetime.datetime.now():%Y%m%d-%H%M%S-%f}.sh"
        text = self.script_text(n_jobs, command)
        names, bad = self.cfg.storage.variables(), self.bad_nodes()
        submit = [
            self.scheduler.excluding(self.scheduler.passing(c, names), bad)
            for c in self.scheduler.submissions(path, n_jobs)
        ]
        return JobScript(text, path, [shlex.join(c) for c in submit])

    def bad_nodes(self) -> list[str]:
        """The study's nodes marked bad, which its jobs exclude (none with ``bad_node_failures: null``)."""
        if self.cfg.optuna.bad_node_failures is None:
            return []
        return BadNodes(self.cfg.paths.bad_nodes).names()

    def bad_nodes_file(self) -> str:
        """The file a job script reads the marked nodes from, quoted; ``''`` when nodes are never marked."""
        if self.cfg.optuna.bad_node_failures is None:
            return "''"
        return shlex.quote(str(self.cfg.paths.bad_nodes))

    def plan_proxy(self, command: WorkerCommand | None = None) -> JobScript:
        """The storage proxy's job script and submit command, without submitting."""
        command = command or WorkerCommand.of(self.cfg.paths)
        return proxy_job(self.cfg, self.scheduler, command, self.setup_lines(), self.python())

    def launch(self, n_workers: int) -> int:
        command = save_run_configs(self.cfg)
        job = self.plan(n_workers, command)
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        job.path.write_text(job.text)
        records = []
        now = datetime.datetime.now().isoformat(timespec="seconds")
        if (
            self.cfg.optuna.proxy_section is not None
            and live_proxy_job(self.cfg.paths, self.scheduler) is None
        ):
            # First, so that it is up, or nearly, when the workers start; they wait for it anyway.
            proxy = self.plan_proxy(command)
            proxy.path.write_text(proxy.text)
            stdout = self.scheduler.run(shlex.split(proxy.submit[0]))
            records.append(self._record(stdout, 0, proxy.path, now, "proxy"))
        n_jobs = self.jobs_for(n_workers)
        per_submit = self.workers_per_job * (n_jobs if len(job.submit) == 1 else 1)
        for submit in job.submit:
            stdout = self.scheduler.run(shlex.split(submit))
            records.append(self._record(stdout, per_submit, job.path, now))
        self.submitted = records
        return 0

    def _record(self, stdout: str, workers: int, script: Path, now: str, role: str = "workers") -> JobRecord:
        """The submitted job, recorded in ``jobs.json`` at once: a job running before it is recorded
        would be a job whose workers no one can tell alive (and a failed later submission would
        lose it)."""
        record = JobRecord(
            self.scheduler.parse_job_id(stdout), workers, str(script), now, role, getpass.getuser()
        )
        append_jobs(self.cfg.paths, [record])
        return record


# Until every worker has exited, noting whether one left with trials still to run.
_WAIT_FOR_WORKERS = [
    "# Each worker's exit code; a signal the shell traps ends a wait early: wait again then.",
    'for pid in "${pids[@]}"; do',
    "    while :; do",
    '        wait "$pid" && code=0 || code=$?',
    '        ((code > 128)) && kill -0 "$pid" 2>/dev/null || break',
    "    done",
    f"    if ((code == {LEFT_FOR_LATER_EXIT_CODE})); then left=yes; fi",
    "done",
]


def _pin_gpus(per_trial: int) -> list[str]:
    """Shell lines that give worker ``i`` its GPUs of the job's ``CUDA_VISIBLE_DEVICES``.

    Worker ``i`` gets group ``i mod (GPUs / per_trial)`` of ``per_trial`` consecutive ids, so no two
    workers share a GPU unless ``tasks_per_worker`` asks for it.
    """
    if per_trial == 1:
        return ['    if ((${#gpus[@]})); then export CUDA_VISIBLE_DEVICES="${gpus[i % ${#gpus[@]}]}"; fi']
    return [
        f"    if ((${{#gpus[@]}} >= {per_trial})); then",
        f"        first=$(( i % (${{#gpus[@]}} / {per_trial}) * {per_trial} ))",
        f'        CUDA_VISIBLE_DEVICES="$(IFS=,; echo "${{gpus[*]:first:{per_trial}}}")"',
        "        export CUDA_VISIBLE_DEVICES",
        "    fi",
    ]


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

"""What a batch scheduler is to this package, in one class per scheduler.

A scheduler owns everything that differs between SLURM, PBS and the rest: the ``hyper.yml``
section named after it and its checks, its submit program and header lines, the environment
variables its jobs see, its job-id format and its queue. The job script around the header (one
worker per ``gpus_per_trial`` GPUs of the allocation) is the same for all and lives in
:mod:`aimlutils.hyper_opt.launchers.batch`.
"""

from __future__ import annotations

import abc
import dataclasses
import re
import shlex
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from aimlutils.hyper_opt._text import as_list
from aimlutils.hyper_opt.errors import HyperOptError, Problem, format_value, join_path

#: Runs a scheduler command and returns its stdout, or raises :class:`SubmitError`.
CommandRunner = Callable[[Sequence[str]], str]

_OPTION_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


class SchedulerSection(BaseModel):
    """A scheduler's section (``slurm``, ``pbs``, ...): how many jobs to submit and the options of each.

    A scheduler with options of its own subclasses it (:attr:`Scheduler.section_model`); the
    ``hyper.yml`` schema has one such section per registered scheduler.
    """

    model_config = ConfigDict(extra="forbid")

    jobs: int = Field(default=1, ge=1)
    batch: dict[str, Any] = Field(default_factory=dict)
    kernel: str | list[str] | None = None
    bash: list[str] = Field(default_factory=list)
    gpus_per_node: int | None = Field(default=None, ge=1)
    # GPUs each worker (each trial) gets of its job's allocation; optuna.gpus_per_trial when unset.
    gpus_per_trial: int | None = Field(default=None, ge=1)
    tasks_per_worker: int = Field(default=1, ge=1)
    trials_per_job: int | None = Field(default=None, ge=1)
    array: bool = True
    throttle: int | None = Field(default=None, ge=1)
    # Seconds before the time limit at which workers get SIGUSR1: no new trial, and the running
    # one may save its checkpoint and leave. 0: no warning.
    stop_warning_s: int = Field(default=120, ge=0)


def alive(job_id: str | None, queue: dict[str, str]) -> bool:
    """Whether job ``job_id`` is in ``queue``: a job (``123``, any of its array tasks counts) or
    one array task (``123_4``)."""
    if not job_id:
        return False
    if job_id in queue:
        return True
    return "_" not in job_id and any(k.split("_", 1)[0] == job_id for k in queue)


class SubmitError(HyperOptError, RuntimeError):
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
class JobEnvironment:
    """Where a worker runs, as its job's environment says."""

    scheduler: str
    job_id: str
    """The id the queue knows the job by (``123_4`` for task 4 of SLURM array 123)."""
    node: str | None = None
    restarts: int = 0
    """How often the job was requeued and started again (it keeps its id)."""


class Scheduler(abc.ABC):
    """One batch scheduler. Subclasses register with :func:`aimlutils.hyper_opt.schedulers.register`.

    A subclass sets :attr:`name` (its ``hyper.yml`` section), :attr:`submit_program` (looked for
    on ``PATH`` before anything is submitted) and :attr:`directive`, and provides the abstract
    methods. It may assume that the section passed in was validated by :attr:`section_model` and
    :meth:`check_section`, and that every scheduler command goes through :attr:`run` (tests
    replace it with a fake). Queue queries must be one scheduler call for all of the user's jobs:
    workers share one result per minute per study.
    """

    name: ClassVar[str]
    submit_program: ClassVar[str]
    directive: ClassVar[str]
    section_model: ClassVar[type[SchedulerSection]] = SchedulerSection
    #: Where :meth:`check_section` tells the user to ask for GPUs (``slurm.batch.gres ...``).
    gpu_request_hint: ClassVar[str] = ""

    def __init__(
        self,
        section: SchedulerSection | None = None,
        save_path: Path | None = None,
        run: CommandRunner = run_scheduler_command,
    ) -> None:
        self.section = section or self.section_model()
        self.save_path = save_path or Path.cwd()
        self.run = run

    # Checks of the section, beyond its schema; found on the login node.

    @classmethod
    @abc.abstractmethod
    def requested_gpus(cls, batch: Mapping[str, Any]) -> int | None:
        """GPUs per job (or node) that the ``batch`` options ask for; ``None`` when none are."""

    @classmethod
    def check_batch(cls, batch: Mapping[str, Any]) -> list[Problem]:
        """Problems of this scheduler's own options (time formats, resource lists)."""
        return []

    @classmethod
    def check_section(cls, section: Mapping[str, Any], gpu: bool) -> list[Problem]:
        """Problems of the raw section (types and unknown keys are the schema's)."""
        batch = section.get("batch") or {}
        if not isinstance(batch, Mapping):
            return []
        problems = cls._option_problems(batch) + cls.check_batch(batch)
        problems += cls._gpu_problems(section, batch, gpu)
        throttle = section.get("throttle")
        if throttle is not None and section.get("array") is False:
            problems.append(
                Problem(join_path(cls.name, "throttle"), "applies to job arrays only (array: true)")
            )
        return problems

    @classmethod
    def list_options(cls) -> tuple[str, ...]:
        """Options whose value may be a list of items, each written on its own line."""
        return ()

    @classmethod
    def _option_problems(cls, batch: Mapping[str, Any]) -> list[Problem]:
        problems = []
        for key, value in batch.items():
            path = join_path(cls.name, "batch", key)
            if not _OPTION_NAME.match(str(key)):
                problems.append(Problem(path, "an option name is letters, digits, '-' and '_'"))
            for item in as_list(value) if key in cls.list_options() else [value]:
                problem = cls._value_problem(item)
                if problem:
                    problems.append(Problem(path, f"got {format_value(item)}; {problem}"))
        return problems

    @classmethod
    def _value_problem(cls, item: Any) -> str | None:
        if isinstance(item, (dict, list)) or item is None:
            return "an option value is text or a number"
        if "\n" in str(item) or "\r" in str(item):
            return "a newline would add lines to the job script"
        if "#" in str(item) and ("#SBATCH" in str(item) or "#PBS" in str(item) or cls.directive in str(item)):
            return f"a {cls.directive} directive inside a value is refused"
        return None

    @classmethod
    def _gpu_problems(cls, section: Mapping[str, Any], batch: Mapping[str, Any], gpu: bool) -> list[Problem]:
        requested = cls.requested_gpus(batch)
        per_node = section.get("gpus_per_node")
        path = join_path(cls.name, "gpus_per_node")
        where = cls.gpu_request_hint
        if isinstance(per_node, int) and requested is not None and per_node > requested:
            return [
                Problem(
                    path,
                    f"{per_node} workers with a GPU each, but the job asks for {requested} GPU(s) in {where}",
                )
            ]
        problems = cls._per_trial_problems(section, requested)
        if isinstance(per_node, int) and requested is None:
            problems.append(Problem(path, f"{per_node} GPUs per job, but no GPU is requested in {where}"))
        if gpu and requested is None:
            problems.append(
                Problem(
                    "optuna.gpu", f"is true, but the {cls.name} section requests no GPU; add one in {where}"
                )
            )
        return problems

    @classmethod
    def _per_trial_problems(cls, section: Mapping[str, Any], requested: int | None) -> list[Problem]:
        """``gpus_per_trial`` against the job's GPUs: within the request, a divisor of ``gpus_per_node``."""
        per_trial, per_node = section.get("gpus_per_trial"), section.get("gpus_per_node")
        if not isinstance(per_trial, int) or isinstance(per_trial, bool) or per_trial <= 1:
            return []  # 1 is the default; other types and values are the schema's to report
        path = join_path(cls.name, "gpus_per_trial")
        if isinstance(per_node, int) and per_node % per_trial:
            return [
                Problem(
                    path,
                    f"{per_trial} GPUs per trial does not divide {cls.name}.gpus_per_node ({per_node}): "
                    f"choose a divisor of {per_node}, or a gpus_per_node that {per_trial} divides",
                )
            ]
        if requested is None or requested < per_trial:
            asked = f"{requested} GPU(s)" if requested is not None else "no GPU"
            return [
                Problem(
                    path,
                    f"{per_trial} GPUs per trial, but the job asks for {asked} in {cls.gpu_request_hint}",
                )
            ]
        return []

    @classmethod
    def cpu_batch(cls, batch: Mapping[str, Any]) -> dict[str, Any]:
        """``batch`` without its GPU requests, for a job that needs none (the storage proxy)."""
        return dict(batch)

    # Where a job's worker runs.

    @classmethod
    @abc.abstractmethod
    def job_environment(cls, environ: Mapping[str, str]) -> JobEnvironment | None:
        """The job this process runs in, from its environment; ``None`` outside this scheduler's jobs."""

    # The job script and its submission.

    @property
    def workers_per_job(self) -> int:
        """Trials a job runs at once (``gpus_per_node / gpus_per_trial``, one when neither is given)
        times workers per GPU group (``tasks_per_worker``, echo-opt's ``trials_per_job``)."""
        per_gpu = self.section.tasks_per_worker
        if per_gpu == 1 and self.section.trials_per_job:
            per_gpu = self.section.trials_per_job
        return self.gpu_groups * per_gpu

    @property
    def gpus_per_trial(self) -> int:
        return self.section.gpus_per_trial or 1

    @property
    def gpu_groups(self) -> int:
        """How many trials' worth of GPUs a job has: ``gpus_per_node / gpus_per_trial``."""
        per_node = self.section.gpus_per_node or self.gpus_per_trial
        return max(1, per_node // self.gpus_per_trial)

    def time_limit_s(self) -> float | None:
        """The job's time limit in seconds, from its ``batch`` options; ``None`` when not given."""
        return None

    @property
    def stop_warning_s(self) -> int:
        """Seconds before the time limit at which workers get SIGUSR1 (0: none).

        ``stop_warning_s``, or a quarter of the job's limit when the limit is at most twice that:
        a warning that long would come at the start (Slurm may send it up to a minute early) and
        tell every trial to leave, while a short job still needs one to leave in time and be
        requeued (:meth:`epilogue`).
        """
        warning, limit = self.section.stop_warning_s, self.time_limit_s()
        if warning and limit is not None and limit <= 2 * warning:
            return int(limit // 4)
        return warning

    def option_lines(self) -> list[str]:
        """``<directive> -x value`` for one-letter keys, ``--key=value`` for longer ones."""
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
        return str(path if path.is_absolute() or value.startswith("/dev/") else self.save_path / path)

    @abc.abstractmethod
    def header(self, n_jobs: int, jobs_dir: Path) -> list[str]:
        """The directives of a script that runs ``n_jobs`` jobs; output files go to ``jobs_dir``."""

    def prologue(self, base_dir: Path) -> list[str]:
        """Shell lines run before the workers start; they must set ``job_index`` (0 ... jobs - 1)."""
        return ['job_index="${AIMLUTILS_JOB_INDEX:-0}"']

    def epilogue(self) -> list[str]:
        """Shell lines run after every worker has exited. They may read ``left`` ("yes" when a
        worker left with trials of the study still to run, its job's time being up or its node
        marked bad), ``stopped`` ("yes" when the job got SIGTERM) and ``bad_nodes`` (the file of
        the study's nodes marked bad, a line each beginning with the node's name and a tab, or
        empty: a job that runs again should run on none of them)."""
        return []

    @abc.abstractmethod
    def submissions(self, script: Path, n_jobs: int) -> list[list[str]]:
        """The submit command(s) for ``n_jobs`` jobs of ``script``."""

    def passing(self, submission: list[str], names: Sequence[str]) -> list[str]:
        """``submission`` changed so that its job gets the variables ``names`` from this process's
        environment (a storage password): by name, never by value, so no secret is on a command
        line or in a job script. The default suits a submit program that hands the job its whole
        environment, as ``sbatch`` does."""
        return submission

    def excluding(self, submission: list[str], nodes: Sequence[str]) -> list[str]:
        """``submission`` changed so that its job runs on none of ``nodes`` (marked bad). The
        default leaves it as it is: a scheduler with no way to exclude a node (PBS) runs the job
        wherever it will, and its workers leave a marked node at once."""
        return submission

    @abc.abstractmethod
    def parse_job_id(self, stdout: str) -> str:
        """The job id in the submit command's output."""

    # The queue, for status, cancel and finding dead trials.

    @abc.abstractmethod
    def queue(self, job_ids: Sequence[str]) -> dict[str, str]:
        """``{job id: state}`` of those of ``job_ids`` (and their array tasks) that are queued or
        running, in one scheduler call. A job the scheduler says it does not know has ended; a
        call that fails or times out raises :class:`SubmitError`, which proves nothing."""

    @abc.abstractmethod
    def cancel(self, job_ids: Sequence[str]) -> None:
        """Cancel the jobs, in one scheduler call."""

    def accounted_gpu_hours(self, job_ids: Sequence[str]) -> float | None:
        """GPU-hours the scheduler's accounting charged to the jobs (elapsed time x GPUs
        allocated); ``None`` where it keeps none, or accounting is off."""
        return None

    def job_alive(self, job_id: str | None, queue: dict[str, str]) -> bool:
        """Whether ``job_id`` (as :meth:`job_environment` gives it) is among ``queue``'s jobs."""
        return alive(job_id, queue)

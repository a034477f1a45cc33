"""PBS (PBS Pro and Torque): one ``qsub`` per job; ``qstat`` and ``qdel``."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aimlutils.hyper_opt._text import as_list
from aimlutils.hyper_opt.errors import Problem, format_value
from aimlutils.hyper_opt.schedulers._base import JobEnvironment, Scheduler

_PBS_NGPUS = re.compile(r"ngpus=(?P<n>\d+)")


def pbs_minutes(value: str) -> float | None:
    """A PBS ``walltime=HH:MM:SS`` (or ``MM:SS``, seconds) in minutes; ``None`` when it does not parse."""
    parts = value.strip().split(":")
    if not all(p.isdigit() for p in parts) or not 1 <= len(parts) <= 3:
        return None
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + int(part)
    return seconds / 60


class Pbs(Scheduler):
    """One ``qsub`` per job; each job learns its number from ``AIMLUTILS_JOB_INDEX``.

    Separate jobs rather than an array: array syntax and variables differ between PBS Pro
    (``-J``, ``PBS_ARRAY_INDEX``) and Torque (``-t``, ``PBS_ARRAYID``), separate jobs do not.
    """

    name = "pbs"
    submit_program = "qsub"
    directive = "#PBS"
    gpu_request_hint = "pbs.batch.l (e.g. select=1:ncpus=8:ngpus=4)"

    @classmethod
    def list_options(cls) -> tuple[str, ...]:
        return ("l",)

    @classmethod
    def requested_gpus(cls, batch: Mapping[str, Any]) -> int | None:
        for item in as_list(batch.get("l")):
            match = _PBS_NGPUS.search(str(item))
            if match:
                return int(match.group("n"))
        return None

    @classmethod
    def cpu_batch(cls, batch: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(batch)
        if "l" in out:
            out["l"] = [re.sub(r":ngpus=\d+", "", str(item)) for item in as_list(out["l"])]
        return out

    @classmethod
    def check_batch(cls, batch: Mapping[str, Any]) -> list[Problem]:
        problems = []
        if "l" in batch and not isinstance(batch["l"], (list, str)):
            problems.append(
                Problem(
                    "pbs.batch.l", "a list of resources, e.g. [select=1:ncpus=8:ngpus=1, walltime=12:00:00]"
                )
            )
        for item in as_list(batch.get("l")):
            text = str(item)
            if text.startswith("walltime=") and pbs_minutes(text.split("=", 1)[1]) is None:
                problems.append(Problem("pbs.batch.l", f"got {format_value(text)}; walltime is HH:MM:SS"))
        return problems

    @classmethod
    def job_environment(cls, environ: Mapping[str, str]) -> JobEnvironment | None:
        job = environ.get("PBS_JOBID")
        if not job:
            return None
        return JobEnvironment(cls.name, job)

    def header(self, n_jobs: int, jobs_dir: Path) -> list[str]:
        lines = self.option_lines()
        if "N" not in self.section.batch:
            lines.append(f"{self.directive} -N hyper_opt")
        return lines

    def prologue(self, base_dir: Path) -> list[str]:
        lines = [
            'job_index="${AIMLUTILS_JOB_INDEX:-0}"',
            f'cd "${{PBS_O_WORKDIR:-{base_dir}}}"',
        ]
        walltime, warning = self.walltime_s(), self.stop_warning_s
        if walltime is not None and warning:
            lines += [
                "# PBS sends no warning before the walltime: each worker sends itself SIGUSR1",
                f"# {warning} s before the end (this script's start plus the walltime), as Slurm's --signal.",
                f'AIMLUTILS_JOB_END="$(date -d "@$(($(date +%s) + {walltime}))" +%Y-%m-%dT%H:%M:%S)"',
                f"AIMLUTILS_STOP_WARNING_S={warning}",
                "export AIMLUTILS_JOB_END AIMLUTILS_STOP_WARNING_S",
            ]
        return lines

    def time_limit_s(self) -> float | None:
        return self.walltime_s()

    def walltime_s(self) -> int | None:
        """The job's ``walltime`` in seconds, from ``batch.l``; ``None`` when it gives none."""
        for item in as_list(self.section.batch.get("l")):
            for resource in str(item).split(","):
                if resource.strip().startswith("walltime="):
                    minutes = pbs_minutes(resource.split("=", 1)[1])
                    return round(minutes * 60) if minutes is not None else None
        return None

    def submissions(self, script: Path, n_jobs: int) -> list[list[str]]:
        return [["qsub", "-v", f"AIMLUTILS_JOB_INDEX={i}", str(script)] for i in range(n_jobs)]

    def passing(self, submission: list[str], names: Sequence[str]) -> list[str]:
        """``-v`` with each name: qsub takes a name without ``=value`` from its own environment.

        Example:
            >>> Pbs.passing(None, ["qsub", "-v", "AIMLUTILS_JOB_INDEX=0", "job.sh"], ["PGPASSWORD"])
            ['qsub', '-v', 'AIMLUTILS_JOB_INDEX=0,PGPASSWORD', 'job.sh']
        """
        if not names:
            return submission
        at = submission.index("-v") + 1
        return [*submission[:at], ",".join([submission[at], *names]), *submission[at + 1 :]]

    def parse_job_id(self, stdout: str) -> str:
        return stdout.strip().splitlines()[-1].strip() if stdout.strip() else ""

    def queue(self, job_ids: Sequence[str]) -> dict[str, str]:
        if not job_ids:
            return {}
        # Every job qstat shows, kept to the ones asked about: qstat refuses a list in which one
        # job has ended, and knows no job of a finished array by its id.
        wanted = {j.split(".", 1)[0].split("[", 1)[0] for j in job_ids}
        out = self.run(["qstat"])
        states = {}
        for line in out.splitlines()[2:]:
            fields = line.split()
            short = fields[0].split(".", 1)[0] if fields else ""
            if len(fields) >= 5 and fields[4] not in ("C", "F", "X") and short.split("[", 1)[0] in wanted:
                states[fields[0]] = fields[4]
                states[short] = fields[4]
        return states

    def cancel(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            self.run(["qdel", *job_ids])

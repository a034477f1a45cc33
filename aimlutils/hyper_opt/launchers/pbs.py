"""Workers as PBS jobs: ``qsub``, ``qstat``, ``qdel``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from aimlutils.hyper_opt.launchers.batch import BatchLauncher, run_scheduler_command


class PbsLauncher(BatchLauncher):
    """One ``qsub`` per job; each job learns its number from ``AIMLUTILS_JOB_INDEX``.

    Separate jobs rather than an array: array syntax and variables differ between PBS Pro
    (``-J``, ``PBS_ARRAY_INDEX``) and Torque (``-t``, ``PBS_ARRAYID``), separate jobs do not.
    """

    name = "pbs"
    directive = "#PBS"

    def header(self, n_jobs: int) -> list[str]:
        lines = self.option_lines()
        if "N" not in self.section.batch:
            lines.append(f"{self.directive} -N hyper_opt")
        return lines

    def prologue(self) -> list[str]:
        return [
            'job_index="${AIMLUTILS_JOB_INDEX:-0}"',
            f'cd "${{PBS_O_WORKDIR:-{self.base_dir}}}"',
        ]

    def submissions(self, script: Path, n_jobs: int) -> list[list[str]]:
        return [["qsub", "-v", f"AIMLUTILS_JOB_INDEX={i}", str(script)] for i in range(n_jobs)]

    def parse_job_id(self, stdout: str) -> str:
        return stdout.strip().splitlines()[-1].strip() if stdout.strip() else ""

    def queue(self) -> dict[str, str]:
        out = run_scheduler_command(["qstat"])
        states = {}
        for line in out.splitlines()[2:]:
            fields = line.split()
            if len(fields) >= 5 and fields[4] not in ("C", "F", "X"):
                states[fields[0]] = fields[4]
                states[fields[0].split(".", 1)[0]] = fields[4]
        return states

    def cancel(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            run_scheduler_command(["qdel", *job_ids])

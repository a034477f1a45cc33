"""Workers as a SLURM job array (or separate jobs): ``sbatch``, ``squeue``, ``scancel``."""

from __future__ import annotations

import getpass
from collections.abc import Sequence
from pathlib import Path

from aimlutils.hyper_opt.launchers.batch import BatchLauncher, run_scheduler_command

# States in which a job still holds, or will hold, its workers.
_LIVE = {
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "COMPLETING",
    "SUSPENDED",
    "REQUEUED",
    "REQUEUE_HOLD",
    "RESIZING",
}


class SlurmLauncher(BatchLauncher):
    """One ``sbatch`` of a job array of ``jobs`` tasks (``array: false``: one ``sbatch`` per job)."""

    name = "slurm"
    directive = "#SBATCH"

    def _is_array(self, n_jobs: int) -> bool:
        return self.section.array and n_jobs > 1

    def header(self, n_jobs: int) -> list[str]:
        lines = self.option_lines()
        keys = set(self.section.batch)
        array = self._is_array(n_jobs)
        if not keys & {"J", "job-name"}:
            lines.append(f"{self.directive} --job-name=hyper_opt")
        if not keys & {"o", "output"}:
            pattern = "%A_%a" if array else "%j"
            lines.append(f"{self.directive} --output={self.cfg.save_path / 'jobs'}/slurm-{pattern}.out")
        if array:
            throttle = f"%{self.section.throttle}" if self.section.throttle else ""
            lines.append(f"{self.directive} --array=0-{n_jobs - 1}{throttle}")
        return lines

    def output_path(self, value: str) -> str:
        # Tasks of an array would all write, and truncate, one file: give each its own.
        path = super().output_path(value)
        if self.section.array and self.section.jobs > 1 and "%" not in path:
            stem, dot, ext = path.rpartition(".")
            path = f"{stem}.%A_%a.{ext}" if dot and "/" not in ext else f"{path}.%A_%a"
        return path

    def prologue(self) -> list[str]:
        return [
            'job_index="${SLURM_ARRAY_TASK_ID:-${AIMLUTILS_JOB_INDEX:-0}}"',
            "# When the job must end: workers start no trial that would not finish by then.",
            'AIMLUTILS_JOB_END="$(squeue -h -j "$SLURM_JOB_ID" -o %e 2>/dev/null || true)"',
            "export AIMLUTILS_JOB_END",
        ]

    def submissions(self, script: Path, n_jobs: int) -> list[list[str]]:
        if self._is_array(n_jobs) or n_jobs == 1:
            return [["sbatch", "--parsable", str(script)]]
        return [
            ["sbatch", "--parsable", f"--export=ALL,AIMLUTILS_JOB_INDEX={i}", str(script)]
            for i in range(n_jobs)
        ]

    def parse_job_id(self, stdout: str) -> str:
        return stdout.strip().split(";", 1)[0]

    def queue(self) -> dict[str, str]:
        out = run_scheduler_command(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i %T"])
        states = {}
        for line in out.splitlines():
            job_id, _, state = line.strip().partition(" ")
            if job_id and state in _LIVE:
                states[job_id] = state
        return states

    def cancel(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            run_scheduler_command(["scancel", *job_ids])

"""SLURM: a job array (or separate jobs) through ``sbatch``; ``squeue`` and ``scancel``."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aimlutils.hyper_opt.errors import Problem, format_value, join_path
from aimlutils.hyper_opt.schedulers._base import JobEnvironment, Scheduler, SubmitError

# States in which a job still holds, or will hold, its workers.
_LIVE = {
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "COMPLETING",
    "SUSPENDED",
    "STOPPED",
    "REQUEUED",
    "REQUEUE_HOLD",
    "RESIZING",
}
_GPU_OPTIONS = ("gpus", "G", "gpus-per-node", "gpus_per_node", "gpus-per-task", "gpus-per-socket")
_SLURM_TIME = re.compile(
    r"^(?:(?P<d>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?"
    r"|(?:(?P<h>\d+):)?(?P<m>\d+)(?::(?P<s>\d+))?)$"
)


def slurm_minutes(value: Any) -> float | None:
    """A Slurm time limit in minutes (``inf`` for UNLIMITED); ``None`` when it does not parse.

    Example:
        >>> slurm_minutes("12:00:00"), slurm_minutes("1-00:30"), slurm_minutes(90)
        (720.0, 1470.0, 90.0)
    """
    text = str(value).strip()
    if text.upper() in ("UNLIMITED", "INFINITE"):
        return float("inf")
    match = _SLURM_TIME.match(text)
    if not match:
        return None
    g = {k: int(v) if v else 0 for k, v in match.groupdict().items()}
    if match.group("d") is not None:
        return g["d"] * 1440 + g["dh"] * 60 + g["dm"] + g["ds"] / 60
    if match.group("h") is None and match.group("s") is None:
        return float(g["m"])  # "90" is minutes
    if match.group("h") is None:
        return g["m"] + g["s"] / 60  # "MM:SS"
    return g["h"] * 60 + g["m"] + g["s"] / 60


def _gres_gpus(gres: str) -> int | None:
    """GPUs in a ``--gres`` value: ``gpu``, ``gpu:4``, ``gpu:v100:4`` (``None`` without a gpu entry)."""
    for entry in gres.split(","):
        parts = entry.strip().split(":")
        if parts[0] != "gpu":
            continue
        count = parts[-1] if len(parts) > 1 else "1"
        return int(count) if count.isdigit() else 1
    return None


class Slurm(Scheduler):
    """One ``sbatch`` of a job array of ``jobs`` tasks (``array: false``: one ``sbatch`` per job)."""

    name = "slurm"
    submit_program = "sbatch"
    directive = "#SBATCH"
    gpu_request_hint = "slurm.batch.gres (e.g. gres: gpu:4)"

    @classmethod
    def requested_gpus(cls, batch: Mapping[str, Any]) -> int | None:
        for key in ("gres", "gpus-per-node", "gpus_per_node", "gpus", "G"):
            if key not in batch:
                continue
            text = str(batch[key])
            if key == "gres":
                count = _gres_gpus(text)
                if count is not None:
                    return count
                continue
            last = text.rsplit(":", 1)[-1]
            return int(last) if last.isdigit() else None
        return None

    @classmethod
    def cpu_batch(cls, batch: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in batch.items() if k not in _GPU_OPTIONS}
        if "gres" in out:
            rest = [e for e in str(out.pop("gres")).split(",") if e.strip().split(":")[0] != "gpu"]
            if rest:
                out["gres"] = ",".join(rest)
        return out

    @classmethod
    def check_batch(cls, batch: Mapping[str, Any]) -> list[Problem]:
        return [
            Problem(
                join_path("slurm.batch", key),
                f"got {format_value(batch[key])}; a time limit is minutes, MM:SS, HH:MM:SS, "
                "D-HH, D-HH:MM or D-HH:MM:SS",
            )
            for key in ("t", "time")
            if key in batch and slurm_minutes(batch[key]) is None
        ]

    @classmethod
    def job_environment(cls, environ: Mapping[str, str]) -> JobEnvironment | None:
        node = environ.get("SLURMD_NODENAME")
        restarts = int(environ.get("SLURM_RESTART_COUNT") or 0)
        if environ.get("SLURM_ARRAY_JOB_ID"):
            job = f"{environ['SLURM_ARRAY_JOB_ID']}_{environ.get('SLURM_ARRAY_TASK_ID', '')}"
            return JobEnvironment(cls.name, job, node, restarts)
        if environ.get("SLURM_JOB_ID"):
            return JobEnvironment(cls.name, environ["SLURM_JOB_ID"], node, restarts)
        return None

    def _is_array(self, n_jobs: int) -> bool:
        return self.section.array and n_jobs > 1

    def header(self, n_jobs: int, jobs_dir: Path) -> list[str]:
        lines = self.option_lines()
        keys = set(self.section.batch)
        array = self._is_array(n_jobs)
        if not keys & {"J", "job-name"}:
            lines.append(f"{self.directive} --job-name=hyper_opt")
        if not keys & {"o", "output"}:
            pattern = "%A_%a" if array else "%j"
            lines.append(f"{self.directive} --output={jobs_dir}/slurm-{pattern}.out")
        if array:
            throttle = f"%{self.section.throttle}" if self.section.throttle else ""
            lines.append(f"{self.directive} --array=0-{n_jobs - 1}{throttle}")
        if self.stop_warning_s and "signal" not in keys:
            # To the batch shell (B:), which passes it on to the workers: time to save and leave.
            lines.append(f"{self.directive} --signal=B:USR1@{self.stop_warning_s}")
        if not keys & {"requeue", "no-requeue"}:
            # A job may put itself back in the queue (epilogue), and a lost node's job is rerun.
            lines.append(f"{self.directive} --requeue")
        if "open-mode" not in keys:
            lines.append(f"{self.directive} --open-mode=append")  # a requeued run keeps the earlier output
        return lines

    def time_limit_s(self) -> float | None:
        for key in ("t", "time"):
            if key in self.section.batch:
                minutes = slurm_minutes(self.section.batch[key])
                return minutes * 60 if minutes is not None else None
        return None

    def output_path(self, value: str) -> str:
        # Tasks of an array would all write, and truncate, one file: give each its own.
        path = super().output_path(value)
        if self.section.array and self.section.jobs > 1 and "%" not in path:
            stem, dot, ext = path.rpartition(".")
            path = f"{stem}.%A_%a.{ext}" if dot and "/" not in ext else f"{path}.%A_%a"
        return path

    def prologue(self, base_dir: Path) -> list[str]:
        return [
            'job_index="${SLURM_ARRAY_TASK_ID:-${AIMLUTILS_JOB_INDEX:-0}}"',
            "# This job in the queue: an array's task by ARRAY_TASK (its SLURM_JOB_ID may be the id",
            "# of the whole array, which squeue and scontrol take for every task).",
            'job_id="${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}"',
            'job_id="${job_id:-$SLURM_JOB_ID}"',
            "# When the job must end: workers start no trial that would not finish by then.",
            'AIMLUTILS_JOB_END="$(squeue -h -j "$job_id" -o %e 2>/dev/null || true)"',
            "export AIMLUTILS_JOB_END",
        ]

    def epilogue(self) -> list[str]:
        mine = shlex.quote(self.user_excluded() + ",") if self.user_excluded() else ""
        return [
            "# Time is up with trials left: back in the queue, where the next run continues them. Not",
            "# a job cancelled or preempted: SIGTERM then, which only the time limit's SIGTERM passes.",
            "if [[ $left == yes ]] && { [[ $stopped == no ]] ||",
            '    [[ "$(squeue -h -j "$job_id" -o %r 2>/dev/null)" == TimeLimit ]]; }; then',
            "    # Its next run excludes the nodes marked bad. The requeue sends this job SIGTERM, and",
            "    # the update can only come after it: both run with SIGTERM ignored. A job that cannot",
            "    # be kept off a bad node is cancelled rather than run there again.",
            '    excluded="$(cut -f1 "${bad_nodes:-/dev/null}" 2>/dev/null | paste -sd, -)"',
            "    (",
            "        trap '' TERM",
            '        scontrol requeue "$job_id"',
            "        if [[ -n $excluded ]] &&",
            f'            ! scontrol update JobId="$job_id" ExcNodeList={mine}"$excluded"; then',
            '            scancel "$job_id"',
            "        fi",
            "    )",
            "fi",
        ]

    def user_excluded(self) -> str:
        """The nodes ``batch`` excludes (``exclude``/``x``), as written; empty when none."""
        for key in ("exclude", "x"):
            if key in self.section.batch:
                return str(self.section.batch[key])
        return ""

    def excluding(self, submission: list[str], nodes: Sequence[str]) -> list[str]:
        """``--exclude`` with the nodes ``batch`` excludes and ``nodes``, on the command line
        (which wins over the script's own ``#SBATCH --exclude``).

        Example:
            >>> Slurm().excluding(["sbatch", "--parsable", "job.sh"], ["node2", "node7"])
            ['sbatch', '--exclude=node2,node7', '--parsable', 'job.sh']
        """
        if not nodes:
            return submission
        listed = ",".join([self.user_excluded(), *nodes] if self.user_excluded() else nodes)
        return [submission[0], f"--exclude={listed}", *submission[1:]]

    def submissions(self, script: Path, n_jobs: int) -> list[list[str]]:
        if self._is_array(n_jobs) or n_jobs == 1:
            return [["sbatch", "--parsable", str(script)]]
        return [
            ["sbatch", "--parsable", f"--export=ALL,AIMLUTILS_JOB_INDEX={i}", str(script)]
            for i in range(n_jobs)
        ]

    def parse_job_id(self, stdout: str) -> str:
        return stdout.strip().split(";", 1)[0]

    def queue(self, job_ids: Sequence[str]) -> dict[str, str]:
        if not job_ids:
            return {}
        try:
            out = self.run(["squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", "%i %T"])
        except SubmitError as err:
            # Asked about one job, squeue says it no longer knows it this way (about several, it
            # leaves the ended ones out): an answer, not a failure.
            if "Invalid job id specified" in err.stderr:
                return {}
            raise
        states = {}
        for line in out.splitlines():
            job_id, _, state = line.strip().partition(" ")
            if job_id and state in _LIVE:
                states[job_id] = state
        return states

    def cancel(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            self.run(["scancel", *job_ids])

    def accounted_gpu_hours(self, job_ids: Sequence[str]) -> float | None:
        """From ``sacct`` (allocations only: ``ElapsedRaw`` x the ``gres/gpu`` of ``AllocTRES``).

        Example:
            >>> out = "67_0|120|billing=1,cpu=1,gres/gpu=2,node=1\\n67_1|60|cpu=1,node=1"
            >>> round(Slurm(run=lambda command: out).accounted_gpu_hours(["67"]), 4)
            0.0667
        """
        if not job_ids:
            return None
        fields = "JobID,ElapsedRaw,AllocTRES"
        try:
            out = self.run(["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), "-o", fields])
        except SubmitError:
            return None  # "Slurm accounting storage is disabled", or no sacct here
        seconds = 0.0
        for line in out.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 3 and parts[1].isdigit():
                found = re.search(r"gres/gpu(?::[^=,]*)?=(\d+)", parts[2])
                seconds += int(parts[1]) * (int(found.group(1)) if found else 0)
        return seconds / 3600

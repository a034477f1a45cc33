"""Checks of the ``slurm`` / ``pbs`` sections: options that are safe to write into a job script,
a wall time that parses, and a GPU request that matches what the workers need."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from aimlutils.hyper_opt.errors import Problem, format_value, join_path

_OPTION_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_SLURM_TIME = re.compile(
    r"^(?:(?P<d>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?"
    r"|(?:(?P<h>\d+):)?(?P<m>\d+)(?::(?P<s>\d+))?)$"
)
_PBS_NGPUS = re.compile(r"ngpus=(?P<n>\d+)")


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


def pbs_minutes(value: str) -> float | None:
    """A PBS ``walltime=HH:MM:SS`` (or ``MM:SS``, seconds) in minutes; ``None`` when it does not parse."""
    parts = value.strip().split(":")
    if not all(p.isdigit() for p in parts) or not 1 <= len(parts) <= 3:
        return None
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + int(part)
    return seconds / 60


def slurm_gpus(batch: Mapping[str, Any]) -> int | None:
    """GPUs per node (or job) the ``batch`` options ask for; ``None`` when none are asked for."""
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


def _gres_gpus(gres: str) -> int | None:
    """GPUs in a ``--gres`` value: ``gpu``, ``gpu:4``, ``gpu:v100:4`` (``None`` without a gpu entry)."""
    for entry in gres.split(","):
        parts = entry.strip().split(":")
        if parts[0] != "gpu":
            continue
        count = parts[-1] if len(parts) > 1 else "1"
        return int(count) if count.isdigit() else 1
    return None


def pbs_gpus(batch: Mapping[str, Any]) -> int | None:
    for item in _as_list(batch.get("l")):
        match = _PBS_NGPUS.search(str(item))
        if match:
            return int(match.group("n"))
    return None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _option_problems(name: str, batch: Mapping[str, Any]) -> list[Problem]:
    problems = []
    directive = "#SBATCH" if name == "slurm" else "#PBS"
    for key, value in batch.items():
        path = join_path(name, "batch", key)
        if not _OPTION_NAME.match(str(key)):
            problems.append(Problem(path, "an option name is letters, digits, '-' and '_'"))
        values = _as_list(value) if name == "pbs" and key == "l" else [value]
        for item in values:
            if isinstance(item, (dict, list)) or item is None:
                problems.append(
                    Problem(path, f"got {format_value(item)}; an option value is text or a number")
                )
            elif "\n" in str(item) or "\r" in str(item):
                problems.append(
                    Problem(path, f"got {format_value(item)}; a newline would add lines to the job script")
                )
            elif "#" in str(item) and ("#SBATCH" in str(item) or "#PBS" in str(item)):
                problems.append(
                    Problem(
                        path, f"got {format_value(item)}; a {directive} directive inside a value is refused"
                    )
                )
    return problems


def check_scheduler(name: str, section: Mapping[str, Any], gpu: bool) -> list[Problem]:
    """Problems of one ``slurm`` or ``pbs`` section (types and unknown keys are the schema's)."""
    batch = section.get("batch") or {}
    if not isinstance(batch, Mapping):
        return []
    problems = _option_problems(name, batch)
    if name == "slurm":
        for key in ("t", "time"):
            if key in batch and slurm_minutes(batch[key]) is None:
                problems.append(
                    Problem(
                        join_path("slurm.batch", key),
                        f"got {format_value(batch[key])}; a time limit is minutes, MM:SS, HH:MM:SS, "
                        "D-HH, D-HH:MM or D-HH:MM:SS",
                    )
                )
        requested = slurm_gpus(batch)
        where = "slurm.batch.gres (e.g. gres: gpu:4)"
    else:
        if "l" in batch and not isinstance(batch["l"], (list, str)):
            problems.append(
                Problem(
                    "pbs.batch.l", "a list of resources, e.g. [select=1:ncpus=8:ngpus=1, walltime=12:00:00]"
                )
            )
        for item in _as_list(batch.get("l")):
            text = str(item)
            if text.startswith("walltime=") and pbs_minutes(text.split("=", 1)[1]) is None:
                problems.append(Problem("pbs.batch.l", f"got {format_value(text)}; walltime is HH:MM:SS"))
        requested = pbs_gpus(batch)
        where = "pbs.batch.l (e.g. select=1:ncpus=8:ngpus=4)"
    per_node = section.get("gpus_per_node")
    if isinstance(per_node, int) and requested is not None and per_node > requested:
        problems.append(
            Problem(
                join_path(name, "gpus_per_node"),
                f"{per_node} workers with a GPU each, but the job asks for {requested} GPU(s) in {where}",
            )
        )
    if isinstance(per_node, int) and requested is None:
        problems.append(
            Problem(
                join_path(name, "gpus_per_node"),
                f"{per_node} GPUs per job, but no GPU is requested in {where}",
            )
        )
    if gpu and requested is None:
        problems.append(
            Problem("optuna.gpu", f"is true, but the {name} section requests no GPU; add one in {where}")
        )
    throttle = section.get("throttle")
    if throttle is not None and section.get("array") is False:
        problems.append(Problem(join_path(name, "throttle"), "applies to job arrays only (array: true)"))
    return problems

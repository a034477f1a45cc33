"""``optimize.py rerun hyper.yml N``: train trial N again here, and compare its value with the stored one.

The trial's parameters go through the code the workers run (colon paths, ``custom_updates``),
into the study's Objective, in this process, with a checkpoint directory of its own (so a
continued trial trains from the start rather than finding its last checkpoint). What differs from
the trial's record (the objective file, its git commit, the config as applied) is said first.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from aimlutils.hyper_opt._text import show
from aimlutils.hyper_opt.commands.common import load_for_study, say
from aimlutils.hyper_opt.commands.report import NO_STUDY_EXIT_CODE, no_study, open_existing
from aimlutils.hyper_opt.config import RunConfig
from aimlutils.hyper_opt.coordination import read_record
from aimlutils.hyper_opt.coordination import study as study_lib
from aimlutils.hyper_opt.errors import ExitCode
from aimlutils.hyper_opt.launchers import gpu_groups, visible_gpus
from aimlutils.hyper_opt.objective.base import BaseObjective
from aimlutils.hyper_opt.objective.reproduce import REPRO_KEY, config_id_of, environment, read_env
from aimlutils.hyper_opt.stop import StopSignal

#: Exit code when trial N cannot be run again (no such trial, no parameters) or its training failed.
RERUN_FAILED_EXIT_CODE = int(ExitCode.FAILED)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optimize.py rerun",
        description="Train trial N of the study again in this process and print its value next to the "
        "stored one.",
    )
    parser.add_argument("hyper", help="the study's hyper.yml")
    parser.add_argument("trial", type=int, help="the trial's number")
    parser.add_argument("model", nargs="?", help="model.yml (default: the copy saved in save_path)")
    return parser


def rerun(args: argparse.Namespace, console: Console) -> int:
    cfg = load_for_study(args.hyper, args.model)
    storage = open_existing(cfg)
    if storage is None:
        say(console, no_study(cfg))
        return NO_STUDY_EXIT_CODE
    study = study_lib.load(cfg, storage, 1)
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == args.trial), None)
    if trial is None or not trial.params:
        why = "no such trial" if trial is None else f"it is {trial.state.name} with no parameters yet"
        say(console, f"Trial {args.trial} of study {cfg.study_name!r} cannot be run again: {why}.")
        return RERUN_FAILED_EXIT_CODE
    say(console, f"Rerunning trial {trial.number} of study {cfg.study_name!r} ({trial.state.name}) here")
    for note in differences(cfg, trial):
        say(console, f"Note: {note}")
    objective = _objective(cfg, study)
    kept = objective.recorder = _KeepConfig()
    fixed = optuna.trial.FixedTrial(dict(trial.params), number=trial.number)
    try:
        values = _run(objective, fixed)
    except optuna.TrialPruned:  # a FixedTrial never prunes; an objective may raise it itself
        say(console, "The rerun was pruned by the objective itself; no value to compare.")
        return RERUN_FAILED_EXIT_CODE
    except Exception as err:
        say(console, f"The rerun failed: {type(err).__name__}: {err}")
        return RERUN_FAILED_EXIT_CODE
    stored_config = (read_record(trial).get(REPRO_KEY) or {}).get("config")
    if kept.conf is not None and stored_config and config_id_of(kept.conf) != stored_config:
        say(
            console,
            "Note: the model config as applied differs from the trial's (model.yml or custom_updates "
            "changed since)",
        )
    for line in compare(cfg, trial, values if isinstance(values, list) else [values]):
        say(console, line)
    return 0


def _run(objective: BaseObjective, trial: optuna.trial.FixedTrial) -> float | list[float]:
    try:
        with StopSignal.interruptible_section():
            return objective(trial)
    finally:
        if objective.scratch_dir is not None:  # the rerun's own checkpoints: not wanted afterwards
            shutil.rmtree(objective.scratch_dir, ignore_errors=True)


class _KeepConfig:
    """In the worker's recorder's place: keeps the config the rerun trains with, writes nothing."""

    def __init__(self) -> None:
        self.conf: Mapping[str, Any] | None = None

    def note_config(self, number: int, conf: Mapping[str, Any]) -> None:
        self.conf = conf

    def fields(self, number: int) -> dict[str, Any]:
        return {}


def _objective(cfg: RunConfig, study: optuna.Study) -> BaseObjective:
    from aimlutils.hyper_opt.worker.setup import build_worker_objective, worker_identity  # the training stack

    groups = gpu_groups(visible_gpus(), cfg.gpus_per_trial)
    if cfg.optuna.gpu and groups and "CUDA_VISIBLE_DEVICES" not in os.environ:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(groups[0])  # as a local worker is given them

    objective = build_worker_objective(cfg, study, worker_identity(0))
    # Not a trial of the study: no MLflow run, no record, and a checkpoint directory of its own.
    objective.mlflow_run, objective.study_paths = None, None
    return objective


def differences(cfg: RunConfig, trial: FrozenTrial) -> list[str]:
    """What is not as it was when ``trial`` ran: its objective's file or commit, the machine's
    packages; empty when the trial kept no record of its environment."""
    record = read_record(trial)
    then = read_env(cfg.paths, (record.get(REPRO_KEY) or {}).get("env"))
    if then is None:
        return ["the trial kept no record of its environment; nothing to compare it with"]
    now = environment(cfg)
    notes = []
    was, isnow = then.get("objective") or {}, now.get("objective") or {}
    if was.get("sha256") and was.get("sha256") != isnow.get("sha256"):
        notes.append(f"{isnow.get('path') or 'the objective'} changed since the trial ran (sha256 differs)")
    was_git, now_git = was.get("git") or {}, isnow.get("git") or {}
    if was_git.get("commit") and was_git.get("commit") != now_git.get("commit"):
        notes.append(
            f"the objective's git commit was {was_git['commit'][:12]}, now {str(now_git.get('commit'))[:12]}"
        )
    if was_git.get("dirty"):
        notes.append("the objective's repository had uncommitted changes when the trial ran")
    packages = {
        name: (version, (now.get("packages") or {}).get(name))
        for name, version in (then.get("packages") or {}).items()
        if (now.get("packages") or {}).get(name) != version
    }
    if packages:
        notes.append(
            "package versions differ: "
            + ", ".join(f"{n} {a} then, {b} now" for n, (a, b) in packages.items())
        )
    gpus_then, gpus_now = then.get("gpus") or [], now.get("gpus") or []
    if gpus_then != gpus_now:
        notes.append(f"GPUs then: {', '.join(gpus_then) or 'none'}; here: {', '.join(gpus_now) or 'none'}")
    worker = record.get("worker") or {}
    if worker.get("host") and worker.get("host") != socket.gethostname():
        where = f" (job {worker['job_id']})" if worker.get("job_id") else ""
        notes.append(f"it ran on {worker['host']}{where}; this is {socket.gethostname()}")
    return notes


def compare(cfg: RunConfig, trial: FrozenTrial, values: Sequence[float]) -> list[str]:
    """Lines that put each rerun value next to the stored one."""
    stored = list(trial.values or [])
    lines = []
    if trial.state == TrialState.PRUNED:
        lines.append(
            "The trial was PRUNED: its stored value is its last reported one; the rerun trained to the end."
        )
    for i, (metric, value) in enumerate(zip(cfg.metrics, values, strict=False)):
        before = stored[i] if i < len(stored) else None
        if before is None:
            lines.append(f"{metric}: rerun {show(value)} (the trial stored no value: {trial.state.name})")
            continue
        same = math.isclose(value, before, rel_tol=1e-9, abs_tol=1e-12)
        verdict = "the same" if same else f"differs by {show(value - before)} ({_relative(value, before)})"
        lines.append(f"{metric}: rerun {show(value)}, stored {show(before)}: {verdict}")
    return lines


def _relative(value: float, before: float) -> str:
    if before == 0:
        return "stored value 0"
    return f"{abs(value - before) / abs(before):.2%}"


__all__ = ["compare", "differences", "parser", "rerun"]

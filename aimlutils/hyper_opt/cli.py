"""``optimize.py hyper.yml model.yml``: check the configs, create or reload the study, start workers."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import optuna
from rich.console import Console

from aimlutils.hyper_opt import progress
from aimlutils.hyper_opt import study as study_lib
from aimlutils.hyper_opt.config import ConfigError, RunConfig, load_config
from aimlutils.hyper_opt.errors import CONFIG_ERROR_EXIT_CODE
from aimlutils.hyper_opt.launchers import LocalLauncher, default_workers, visible_gpus
from aimlutils.hyper_opt.launchers.base import which
from aimlutils.hyper_opt.logs import configure_logging
from aimlutils.hyper_opt.results import ResultsCsv
from aimlutils.hyper_opt.storage import open_storage

logger = logging.getLogger(__name__)

_SUBMIT = {"slurm": "sbatch", "pbs": "qsub"}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="optimize.py",
        description="Distributed hyperparameter optimization with Optuna: one shared study, many workers.",
    )
    parser.add_argument("hyper", help="hyperparameter config (log / slurm / optuna sections)")
    parser.add_argument("model", help="the model config you train with")
    parser.add_argument(
        "--local", action="store_true", help="run the workers on this machine, even with a slurm/pbs section"
    )
    parser.add_argument(
        "--workers", type=int, metavar="N", help="local workers (default: one per visible GPU, else 2)"
    )
    parser.add_argument(
        "--reload", action="store_true", help="continue an existing study (as optuna.reload: 1)"
    )
    parser.add_argument(
        "--export-csv", action="store_true", help="rebuild trial_results.csv from the study and exit"
    )
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    return args


def _with_reload(cfg: RunConfig) -> RunConfig:
    section = cfg.schema.optuna.model_copy(update={"reload": True})
    hyper = dict(cfg.hyper)
    hyper["optuna"] = {**hyper["optuna"], "reload": 1}
    return dataclasses.replace(cfg, schema=cfg.schema.model_copy(update={"optuna": section}), hyper=hyper)


def _scheduler_problem(cfg: RunConfig, local: bool) -> str | None:
    if local or cfg.scheduler is None:
        return None
    name, _ = cfg.scheduler
    if which(_SUBMIT[name]) is None:
        return (
            f"hyper.yml has a {name} section but {_SUBMIT[name]} is not on PATH: run optimize.py on the "
            "cluster's login node, or add --local to run the workers on this machine"
        )
    return (
        f"submitting {name} jobs is not available in this version; add --local to run the workers "
        "on this machine"
    )


def run(args: argparse.Namespace, console: Console) -> int:
    cfg = load_config(args.hyper, args.model)
    if args.reload:
        cfg = _with_reload(cfg)
    problem = _scheduler_problem(cfg, args.local)
    if problem:
        console.print(problem, markup=False, highlight=False)
        return CONFIG_ERROR_EXIT_CODE
    cfg.save_path.mkdir(parents=True, exist_ok=True)
    configure_logging(cfg.log_file, prefix="optimize")
    logging.getLogger("aimlutils").handlers[0].setLevel(logging.WARNING)  # the terminal shows progress
    storage = open_storage(cfg.storage)
    paths: dict[str, Path | str] = {"results": cfg.csv_path, "storage": str(cfg.storage)}
    if args.export_csv:
        study = study_lib.load(cfg, storage, 1)
        with ResultsCsv(cfg.csv_path) as out:
            rows = out.export(study)
        console.print(f"wrote {rows} rows to {cfg.csv_path}")
        return 0
    unplaced = cfg.space.unplaced(cfg.model)
    if unplaced:
        names = ", ".join(p.name for p in unplaced)
        console.print(f"Not in the model config, left to custom_updates: {names}", highlight=False)
    gpus = visible_gpus()
    n_workers = args.workers or default_workers(cfg.optuna.gpu, gpus)
    try:
        study, reloaded = study_lib.create_or_load(cfg, storage, n_workers)
    except study_lib.StudyExistsError as err:
        console.print(str(err), markup=False, highlight=False)
        return CONFIG_ERROR_EXIT_CODE
    snap = progress.snapshot(study, cfg.optuna.n_trials)
    remaining = cfg.optuna.n_trials - snap.done
    if remaining <= 0:
        console.print(f"Study {cfg.study_name!r} already has {snap.done} of {cfg.optuna.n_trials} trials.")
        progress.print_summary(console, study, cfg.optuna.n_trials, paths)
        return 0
    n_workers = min(n_workers, remaining)
    if cfg.storage.kind == "sqlite" and n_workers > 1:
        console.print(
            f"Warning: SQLite ({cfg.storage}) with {n_workers} workers: SQLite locks badly under many "
            "writers and is unsafe on network file systems; prefer the default journal file, "
            "PostgreSQL or MySQL for parallel studies.",
            highlight=False,
        )
    verb = "Continuing" if reloaded else "Starting"
    console.print(
        f"{verb} study {cfg.study_name!r}: {remaining} trials to go, {n_workers} local workers"
        + (f" on GPUs {', '.join(gpus)}" if cfg.optuna.gpu and gpus else ""),
        highlight=False,
    )
    code = LocalLauncher(cfg, console).launch(n_workers)
    if code != 130:
        progress.print_summary(console, study, cfg.optuna.n_trials, paths)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(soft_wrap=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return run(args, console)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())

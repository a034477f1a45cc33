"""``optimize.py hyper.yml model.yml``: check, create or reload the study, start the workers."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import time
from pathlib import Path

from rich.console import Console

from aimlutils.hyper_opt import grid, progress
from aimlutils.hyper_opt import study as study_lib
from aimlutils.hyper_opt.commands.common import say
from aimlutils.hyper_opt.config import RunConfig, load_config
from aimlutils.hyper_opt.errors import CONFIG_ERROR_EXIT_CODE
from aimlutils.hyper_opt.launchers import LocalLauncher, default_workers, visible_gpus
from aimlutils.hyper_opt.launchers.batch import BatchLauncher, SubmitError
from aimlutils.hyper_opt.launchers.scheduler import SUBMIT_PROGRAM, batch_launcher
from aimlutils.hyper_opt.logs import configure_logging
from aimlutils.hyper_opt.results import ResultsCsv
from aimlutils.hyper_opt.storage import open_storage


def _with_reload(cfg: RunConfig) -> RunConfig:
    section = cfg.schema.optuna.model_copy(update={"reload": True})
    hyper = dict(cfg.hyper)
    hyper["optuna"] = {**hyper["optuna"], "reload": 1}
    return dataclasses.replace(cfg, schema=cfg.schema.model_copy(update={"optuna": section}), hyper=hyper)


def _with_grid_budget(cfg: RunConfig, console: Console) -> RunConfig:
    """Say how many grid points there are, and cap ``n_trials`` at that: a grid has no more."""
    if not grid.is_grid(cfg.optuna.sampler):
        return cfg
    n = len(grid.combinations(grid.with_grid(cfg.optuna.sampler or {}, cfg.space)))
    say(console, f"Grid: {n} combinations")
    if cfg.optuna.n_trials <= n:
        return cfg
    say(console, f"optuna.n_trials is {cfg.optuna.n_trials}, more than the grid has: running {n} trials")
    section = cfg.schema.optuna.model_copy(update={"n_trials": n})
    hyper = dict(cfg.hyper)
    hyper["optuna"] = {**hyper["optuna"], "n_trials": n}  # the copy workers read
    return dataclasses.replace(cfg, schema=cfg.schema.model_copy(update={"optuna": section}), hyper=hyper)


def _pick_launcher(cfg: RunConfig, args: argparse.Namespace) -> tuple[BatchLauncher | None, str | None]:
    """The batch launcher (or ``None`` for local workers), or a problem that stops the run."""
    if args.local or cfg.scheduler is None:
        return None, None
    name, _ = cfg.scheduler
    program = SUBMIT_PROGRAM[name]
    if shutil.which(program) is None and not args.dry_run:
        return None, (
            f"hyper.yml has a {name} section but {program} is not on PATH: run optimize.py on the "
            "cluster's login node, or add --local to run the workers on this machine"
        )
    return batch_launcher(cfg), None


def dry_run(launcher: BatchLauncher, console: Console) -> int:
    """Print the script and the submit command(s) for a full set of jobs; submit nothing."""
    job = launcher.plan(launcher.section.jobs * launcher.workers_per_job)
    say(console, f"# {job.path}")
    say(console, job.text)
    for command in job.submit:
        say(console, f"# submit: {command}")
    return 0


def run(args: argparse.Namespace, console: Console) -> int:
    cfg = load_config(args.hyper, args.model, overrides=args.overrides)
    if args.reload:
        cfg = _with_reload(cfg)
    cfg = _with_grid_budget(cfg, console)
    launcher, problem = _pick_launcher(cfg, args)
    if problem:
        say(console, problem)
        return CONFIG_ERROR_EXIT_CODE
    if launcher is not None and args.dry_run:
        return dry_run(launcher, console)
    cfg.save_path.mkdir(parents=True, exist_ok=True)
    configure_logging(cfg.log_file, prefix="optimize")
    logging.getLogger("aimlutils").handlers[0].setLevel(logging.WARNING)  # the terminal shows progress
    storage = open_storage(cfg.storage)
    if args.export_csv:
        with ResultsCsv(cfg.csv_path) as out:
            rows = out.export(study_lib.load(cfg, storage, 1))
        say(console, f"wrote {rows} rows to {cfg.csv_path}")
        return 0
    unplaced = cfg.space.unplaced(cfg.model)
    if unplaced and cfg.command is None:  # a command gets every parameter on its command line
        say(
            console, f"Not in the model config, left to custom_updates: {', '.join(p.name for p in unplaced)}"
        )
    gpus = visible_gpus() if launcher is None else []
    if launcher is not None:
        n_workers = launcher.section.jobs * launcher.workers_per_job
    else:
        n_workers = args.workers or default_workers(cfg.optuna.gpu, gpus)
    try:
        study, reloaded = study_lib.create_or_load(cfg, storage, n_workers)
    except study_lib.StudyExistsError as err:
        say(console, str(err))
        return CONFIG_ERROR_EXIT_CODE
    if reloaded:
        recovered = study_lib.sweep_dead_trials(cfg, study, storage, launcher.queue if launcher else None)
        if recovered:
            say(
                console,
                f"Trials {recovered} were RUNNING with no live worker: marked FAIL, parameters queued again.",
            )
    snap = progress.snapshot(study, cfg.optuna.n_trials)
    remaining = cfg.optuna.n_trials - snap.done
    paths: dict[str, Path | str] = {"results": cfg.csv_path, "storage": str(cfg.storage)}
    if remaining <= 0 or study_lib.target_trial(study, cfg.optuna.target) is not None:
        say(console, f"Study {cfg.study_name!r} already has {snap.done} of {cfg.optuna.n_trials} trials.")
        progress.print_summary(console, study, cfg.optuna.n_trials, paths, cfg.optuna.target)
        return 0
    # Trials still running in live jobs will finish; more workers than places left would idle.
    useful = remaining - snap.counts[study_lib.TrialState.RUNNING] if launcher else remaining
    if useful <= 0:
        say(console, f"All {remaining} remaining trials are running in live jobs; nothing to submit.")
        return 0
    n_workers = min(n_workers, useful)
    if cfg.storage.kind == "sqlite" and n_workers > 1:
        say(
            console,
            f"Warning: SQLite ({cfg.storage}) with {n_workers} workers: SQLite locks badly under many "
            "writers and is unsafe on network file systems; prefer the default journal file, "
            "PostgreSQL or MySQL for parallel studies.",
        )
    verb = "Continuing" if reloaded else "Starting"
    if launcher is not None:
        return _submit(cfg, launcher, n_workers, remaining, verb, console)
    say(
        console,
        f"{verb} study {cfg.study_name!r}: {remaining} trials to go, {n_workers} local workers"
        + (f" on GPUs {', '.join(gpus)}" if cfg.optuna.gpu and gpus else ""),
    )
    code = LocalLauncher(cfg, console).launch(n_workers)
    if code < 128:  # 128 + a signal's number: stopped by it
        progress.print_summary(console, study, cfg.optuna.n_trials, paths, cfg.optuna.target)
    return code


def _submit(
    cfg: RunConfig, launcher: BatchLauncher, n_workers: int, remaining: int, verb: str, console: Console
) -> int:
    started = time.perf_counter()
    try:
        launcher.launch(n_workers)
    except SubmitError as err:
        say(console, f"Submitting failed, nothing was submitted after it:\n{err}")
        return 1
    jobs = launcher.jobs_for(n_workers)
    ids = ", ".join(r.job_id for r in launcher.submitted)
    say(
        console,
        f"{verb} study {cfg.study_name!r}: {remaining} trials to go. Submitted {jobs} job(s) of "
        f"{launcher.workers_per_job} worker(s) in {time.perf_counter() - started:.2f} s: {ids}",
    )
    say(console, f"Follow it with: python optimize.py status {cfg.save_path / 'configs' / 'hyper.yml'}")
    return 0

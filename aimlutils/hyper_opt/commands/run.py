"""``optimize.py hyper.yml model.yml``: check, create or reload the study, start the workers.

In three steps a reader can follow: the checked config (:func:`prepare`), the plan made from it
and the study as it stands (:func:`plan`, which decides and prints nothing), and the plan's
execution (:func:`execute`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import pdb
import shutil
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState
from rich.console import Console

from aimlutils.hyper_opt.commands.common import say
from aimlutils.hyper_opt.config import RunConfig, load_config
from aimlutils.hyper_opt.coordination import ResultsCsv, alive, recover_study, target_trial
from aimlutils.hyper_opt.coordination import study as study_lib
from aimlutils.hyper_opt.errors import CONFIG_ERROR_EXIT_CODE, ConfigError, Problem
from aimlutils.hyper_opt.launchers import (
    BatchLauncher,
    LocalLauncher,
    batch_launcher,
    default_workers,
    gpu_groups,
    job_ids,
    save_run_configs,
    study_queue,
    visible_gpus,
)
from aimlutils.hyper_opt.logs import configure_logging
from aimlutils.hyper_opt.paths import keep_private, private_files
from aimlutils.hyper_opt.report import progress
from aimlutils.hyper_opt.schedulers import SubmitError
from aimlutils.hyper_opt.search_space import grid
from aimlutils.hyper_opt.storage import capacity, connections_held, open_for_command, study_exists
from aimlutils.hyper_opt.storage.locks import lock_problem
from aimlutils.hyper_opt.storage.secrets import PASSWORD_ENV, SAFER_WAYS


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a run will do, decided from the config and the study as it stands."""

    n_workers: int
    """Workers to start (0: nothing to do)."""
    remaining: int
    """Trials still to finish, to reach ``n_trials``."""
    notes: tuple[str, ...] = ()
    """Said before anything starts."""
    done_message: str | None = None
    """Why nothing starts, when ``n_workers`` is 0."""


def prepare(args: argparse.Namespace, console: Console) -> RunConfig:
    """The checked config of this run: overrides, ``--reload``, and a grid's own budget applied."""
    cfg = load_config(args.hyper, args.model, overrides=args.overrides)
    if args.reload:
        cfg = cfg.with_optuna(reload=True)
    if not grid.is_grid(cfg.optuna.sampler):
        return cfg
    n = len(grid.combinations(grid.with_grid(cfg.optuna.sampler or {}, cfg.space)))
    say(console, f"Grid: {n} combinations")
    if cfg.optuna.n_trials <= n:
        return cfg
    say(console, f"optuna.n_trials is {cfg.optuna.n_trials}, more than the grid has: running {n} trials")
    return cfg.with_optuna(n_trials=n)


def check_writable(path: Path, key: str) -> None:
    """Raise a config error unless ``path`` exists as a writable directory or could be made one."""
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    problem = None
    if existing is not None and not existing.is_dir():
        problem = f"{path} cannot be created: {existing} is a file"
    elif existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == path else f"cannot be created: {existing} is not writable"
        problem = f"{path} {what}; choose a directory you can write to (on the shared file system)"
    if problem:
        raise ConfigError([Problem(key, problem)])


def check_local_gpus(cfg: RunConfig, gpus: list[str]) -> None:
    """Raise a config error when a local run's trials need more GPUs than this machine shows."""
    per_trial = cfg.gpus_per_trial
    if not cfg.optuna.gpu or not gpus or len(gpus) >= per_trial:
        return
    key = "optuna.gpus_per_trial"
    if cfg.optuna.gpus_per_trial is None and cfg.scheduler is not None:
        key = f"{cfg.scheduler[0]}.gpus_per_trial"
    raise ConfigError(
        [
            Problem(
                key,
                f"{per_trial} GPUs per trial, but this machine shows {len(gpus)} "
                f"(GPU {', '.join(gpus)}); run on a machine with more, or lower gpus_per_trial",
            )
        ]
    )


def missing_submit_program(cfg: RunConfig, launcher: BatchLauncher) -> str | None:
    program = launcher.scheduler.submit_program
    if shutil.which(program) is not None:
        return None
    return (
        f"hyper.yml has a {launcher.scheduler.name} section but {program} is not on PATH: run "
        "optimize.py on the cluster's login node, or add --local to run the workers on this machine"
    )


def plan(cfg: RunConfig, study: optuna.Study, launcher: BatchLauncher | None, wanted: int) -> Plan:
    """How many workers to start for the trials left; ``wanted`` is what the user asked for."""
    snap = progress.snapshot(study, cfg.optuna.n_trials)
    remaining = cfg.optuna.n_trials - snap.done
    if remaining <= 0 or target_trial(study, cfg.optuna.target) is not None:
        return Plan(
            0,
            remaining,
            done_message=f"Study {cfg.study_name!r} already has {snap.done} of {cfg.optuna.n_trials} trials.",
        )
    # Trials still running in live jobs will finish; more workers than places left would idle.
    useful = remaining - snap.counts[TrialState.RUNNING] if launcher else remaining
    if useful <= 0:
        return Plan(
            0,
            remaining,
            done_message=f"All {remaining} remaining trials are running in live jobs; nothing to submit.",
        )
    n_workers = min(wanted, useful)
    notes = []
    unplaced = cfg.space.unplaced(cfg.model)
    if unplaced and cfg.command is None:  # a command gets every parameter on its command line
        notes.append(
            f"Not in the model config, left to custom_updates: {', '.join(p.name for p in unplaced)}"
        )
    kind = cfg.storage.storage_kind
    if kind.many_workers_warning and n_workers > 1:
        notes.append(
            f"Warning: {kind.title} ({cfg.storage}) with {n_workers} workers: {kind.many_workers_warning}"
        )
    return Plan(n_workers, remaining, tuple(notes))


def run(args: argparse.Namespace, console: Console) -> int:
    cfg = prepare(args, console)
    if cfg.storage.secret is not None:
        say(
            console,
            f"optuna.storage: the password is written in hyper.yml. It is kept out of save_path "
            f"({cfg.storage}) and handed to the workers in their environment ({PASSWORD_ENV}); {SAFER_WAYS}.",
        )
    launcher = None if args.local else batch_launcher(cfg)
    if launcher is not None and args.dry_run:
        return dry_run(launcher, console)
    if launcher is not None and (problem := missing_submit_program(cfg, launcher)):
        say(console, problem)
        return CONFIG_ERROR_EXIT_CODE
    # Before anything is created: save_path may not be writable, the storage may not answer.
    gpus = visible_gpus() if launcher is None else []
    if launcher is None:
        check_local_gpus(cfg, gpus)
    check_writable(cfg.save_path, "optuna.save_path")
    private_files(cfg.optuna.readable_by)  # before the journal file is made
    storage = open_for_command(cfg.storage, cfg.optuna.storage_wait_s)
    keep_private(cfg.save_path, cfg.optuna.readable_by)
    if problem := lock_problem(cfg.save_path):
        raise ConfigError([Problem("optuna.save_path", problem)])
    configure_logging(cfg.log_file, prefix="optimize", console_level=logging.WARNING)  # progress shows
    if args.export_csv:
        return export_csv(cfg, storage, console)
    wanted = (
        launcher.section.jobs * launcher.workers_per_job
        if launcher
        else (args.workers or default_workers(cfg.optuna.gpu, gpus, cfg.gpus_per_trial))
    )
    # A new study is refused before it is made; a reloaded one once its remaining trials are known.
    local = launcher is None
    new = not study_exists(storage, cfg.study_name)
    if new and (problem := connection_problem(cfg, storage, min(wanted, cfg.optuna.n_trials), local)):
        say(console, problem)
        return CONFIG_ERROR_EXIT_CODE
    try:
        study_lib.claim_save_path(cfg)
        study, reloaded = study_lib.create_or_load(cfg, storage, wanted)
    except study_lib.StudyExistsError as err:
        say(console, str(err))
        return CONFIG_ERROR_EXIT_CODE
    if reloaded:
        scheduler = launcher.scheduler if launcher else None
        queue = study_queue(scheduler, cfg.paths) if scheduler else None
        recovered = recover_study(
            study,
            storage,
            cfg.paths,
            queue,
            cfg.optuna.max_retries,
            scheduler.job_alive if scheduler else alive,
            lambda: job_ids(cfg.paths),
        )
        if recovered:
            say(
                console,
                f"Trials {recovered} were RUNNING with no live worker: marked FAIL, parameters queued again.",
            )
    if args.debug:
        return debug_one_trial(cfg, console)
    the_plan = plan(cfg, study, launcher, wanted)
    workers = the_plan.n_workers
    if not new and workers and (problem := connection_problem(cfg, storage, workers, local)):
        say(console, problem)
        return CONFIG_ERROR_EXIT_CODE
    return execute(cfg, study, storage, the_plan, launcher, reloaded, console)


def connection_problem(
    cfg: RunConfig, storage: optuna.storages.BaseStorage, n_workers: int, local: bool
) -> str | None:
    """Why the database cannot take the workers (or the proxy), or ``None`` when it can.

    ``storage`` is optimize.py's own: its open connections are its share, not others' in use.
    """
    proxy = cfg.optuna.proxy_section
    connections = proxy.connections if proxy is not None else n_workers
    held = connections_held(storage)
    return capacity.connection_problem(cfg.storage, connections, proxy is not None, local, held)


def execute(
    cfg: RunConfig,
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    the_plan: Plan,
    launcher: BatchLauncher | None,
    reloaded: bool,
    console: Console,
) -> int:
    """Start the plan's workers: submit their jobs, or run them here and wait."""
    paths: dict[str, Path | str] = {"results": cfg.csv_path, "storage": str(cfg.storage)}
    if the_plan.done_message:
        if reloaded:  # workers still running (a lowered n_trials) take up the saved config
            save_run_configs(cfg)
        say(console, the_plan.done_message)
        if the_plan.remaining <= 0 or target_trial(study, cfg.optuna.target) is not None:
            progress.print_summary(console, study, cfg.optuna.n_trials, paths, cfg.optuna.target)
        return 0
    for note in the_plan.notes:
        say(console, note)
    verb = "Continuing" if reloaded else "Starting"
    if launcher is not None:
        return _submit(cfg, launcher, the_plan, verb, console)
    groups = gpu_groups(visible_gpus(), cfg.gpus_per_trial)[: the_plan.n_workers]
    on = ""
    if cfg.optuna.gpu and groups:
        several = cfg.gpus_per_trial > 1
        on = f" on GPUs {('; ' if several else ', ').join(','.join(g) for g in groups)}"
        on += f" ({cfg.gpus_per_trial} per trial)" if several else ""
    say(
        console,
        f"{verb} study {cfg.study_name!r}: {the_plan.remaining} trials to go, "
        f"{the_plan.n_workers} local workers{on}",
    )
    code = LocalLauncher(cfg, console).launch(the_plan.n_workers, study, storage)
    if code < 128:  # 128 + a signal's number: stopped by it
        progress.print_summary(console, study, cfg.optuna.n_trials, paths, cfg.optuna.target)
    return code


def dry_run(launcher: BatchLauncher, console: Console) -> int:
    """Print the script and the submit command(s) for a full set of jobs; submit nothing."""
    jobs = [launcher.plan(launcher.section.jobs * launcher.workers_per_job)]
    if launcher.cfg.optuna.proxy_section is not None:
        jobs.insert(0, launcher.plan_proxy())
    for job in jobs:
        say(console, f"# {job.path}")
        say(console, job.text)
        for command in job.submit:
            say(console, f"# submit: {command}")
    return 0


def export_csv(cfg: RunConfig, storage: optuna.storages.BaseStorage, console: Console) -> int:
    """``--export-csv``: rebuild ``trial_results.csv`` from the study; nothing runs."""
    with ResultsCsv(cfg.csv_path) as out:
        rows = out.export(study_lib.load(cfg, storage, 1))
    say(console, f"wrote {rows} rows to {cfg.csv_path}")
    return 0


def debug_one_trial(cfg: RunConfig, console: Console) -> int:
    """``--debug``: one trial in this process; the debugger opens on its first exception."""
    from aimlutils.hyper_opt.worker import Worker  # the user's training stack loads only here

    say(console, f"Debugging one trial of study {cfg.study_name!r} in this process")
    try:
        ran = Worker(cfg, max_trials=1, reraise=True).run()
    except Exception as err:
        say(console, f"The trial failed with {type(err).__name__}: {err}; opening the debugger")
        pdb.post_mortem(err.__traceback__)
        return 1
    say(console, f"Ran {ran} trial(s) without an error.")
    return 0


def _submit(cfg: RunConfig, launcher: BatchLauncher, the_plan: Plan, verb: str, console: Console) -> int:
    started = time.perf_counter()
    try:
        launcher.launch(the_plan.n_workers)
    except SubmitError as err:
        say(console, f"Submitting failed, nothing was submitted after it:\n{err}")
        return 1
    jobs = launcher.jobs_for(the_plan.n_workers)
    ids = ", ".join(r.job_id for r in launcher.submitted)
    say(
        console,
        f"{verb} study {cfg.study_name!r}: {the_plan.remaining} trials to go. Submitted {jobs} job(s) of "
        f"{launcher.workers_per_job} worker(s) in {time.perf_counter() - started:.2f} s: {ids}",
    )
    bad = launcher.bad_nodes()
    if bad:
        say(console, f"Left out, marked bad: {', '.join(bad)} (status says why)")
    # The copy names ${AIMLUTILS_STORAGE_PASSWORD} for a password written inline: the user's file has it.
    followed = "hyper.yml" if cfg.storage.secret is not None else cfg.paths.hyper_copy
    say(console, f"Follow it with: python optimize.py status {followed}")
    return 0

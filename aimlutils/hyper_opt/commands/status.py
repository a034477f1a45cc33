"""``optimize.py status`` and ``optimize.py cancel``: a study's trials and its jobs."""

from __future__ import annotations

import argparse
import time
from typing import Any

from optuna.trial import TrialState
from rich.console import Console
from rich.table import Table

from aimlutils.hyper_opt import progress
from aimlutils.hyper_opt import study as study_lib
from aimlutils.hyper_opt.commands.common import load_for_study, say
from aimlutils.hyper_opt.launchers.batch import SubmitError, read_jobs
from aimlutils.hyper_opt.launchers.scheduler import batch_launcher
from aimlutils.hyper_opt.liveness import alive
from aimlutils.hyper_opt.storage import open_storage
from aimlutils.hyper_opt.trial_record import RunningTrials

#: How long ``cancel`` waits for cancelled workers to fail their own trials.
CANCEL_WAIT_S = 20.0


def status(args: argparse.Namespace, console: Console) -> int:
    """Trials by state against ``n_trials``, the best so far, running trials and the jobs."""
    cfg = load_for_study(args.hyper, args.model)
    storage = open_storage(cfg.storage)
    study = study_lib.load(cfg, storage, 1)
    launcher = batch_launcher(cfg)
    queue: dict[str, str] = {}
    if launcher is not None and read_jobs(cfg.save_path):
        try:
            queue = launcher.queue()  # the one scheduler call of this command
        except SubmitError as err:
            say(console, f"Could not read the queue: {err}")
    recovered = study_lib.sweep_dead_trials(cfg, study, storage, (lambda: queue) if launcher else None)
    if recovered:
        say(console, f"Trials {recovered} had no live worker: marked FAIL, parameters queued again.")
    snap = progress.snapshot(study, cfg.optuna.n_trials)
    say(console, f"Study {cfg.study_name!r} in {cfg.storage}")
    say(console, snap.line())
    if snap.best_value is not None:
        say(console, f"Best value {snap.best_value:.6g} with {snap.best_params}")
    owners = RunningTrials(cfg.save_path / "running")
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if running:
        table = Table(title="Running trials")
        for column in ("trial", "job", "node", "gpu", "pid", "since"):
            table.add_column(column)
        for t in running:
            owner = owners.owner(t.number) or {}
            since = t.datetime_start.strftime("%H:%M:%S") if t.datetime_start else ""
            row = [owner.get(k) for k in ("job_id", "node", "gpu", "pid")]
            table.add_row(str(t.number), *[str(v) if v is not None else "" for v in row], since)
        console.print(table)
    jobs = read_jobs(cfg.save_path)
    if jobs:
        table = Table(title="Jobs")
        for column in ("job", "workers", "submitted", "queue state"):
            table.add_column(column)
        for job in jobs:
            states = sorted(
                {s for j, s in queue.items() if j == job.job_id or j.startswith(job.job_id + "_")}
            )
            table.add_row(job.job_id, str(job.workers), job.submitted, ", ".join(states) or "ended")
        console.print(table)
    return 0


def cancel(args: argparse.Namespace, console: Console) -> int:
    """Cancel the study's jobs and mark the trials they ran FAIL (their parameters are queued again)."""
    cfg = load_for_study(args.hyper, args.model)
    launcher = batch_launcher(cfg)
    jobs = read_jobs(cfg.save_path)
    if launcher is None or not jobs:
        say(console, f"No jobs recorded for study {cfg.study_name!r} in {cfg.save_path}.")
        return 0
    queue = launcher.queue()
    live = [j.job_id for j in jobs if alive(j.job_id, queue)]
    if live:
        launcher.cancel(live)
    storage = open_storage(cfg.storage)
    study = study_lib.load(cfg, storage, 1)
    owners = RunningTrials(cfg.save_path / "running")
    # Cancelled workers fail and re-queue their own trials; wait for them, then do it for them.
    deadline = time.monotonic() + CANCEL_WAIT_S
    while time.monotonic() < deadline:
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not any(_owned_by(owners.owner(t.number), live) for t in running):
            break
        time.sleep(1.0)
    failed = study_lib.sweep_dead_trials(cfg, study, storage, lambda: {})
    say(console, f"Cancelled {len(live)} job(s): {', '.join(live) or 'none were still queued'}.")
    if failed:
        say(console, f"Trials {failed} were left RUNNING: marked FAIL, parameters queued again.")
    return 0


def _owned_by(owner: dict[str, Any] | None, job_ids: list[str]) -> bool:
    """Whether ``owner`` runs in one of ``job_ids`` (a job array's id covers its tasks)."""
    job = (owner or {}).get("job_id")
    return job is not None and any(alive(j, {job: ""}) for j in job_ids)

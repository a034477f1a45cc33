"""``optimize.py status`` and ``optimize.py cancel``: a study's trials and its jobs."""

from __future__ import annotations

import argparse
import time
from typing import Any

from optuna.trial import TrialState
from rich.console import Console
from rich.table import Table

from aimlutils.hyper_opt.commands.common import load_for_study, say, usage_lines
from aimlutils.hyper_opt.config import RunConfig
from aimlutils.hyper_opt.coordination import BadNodes, RunningTrials, StudyStop, alive, recover_study
from aimlutils.hyper_opt.coordination import study as study_lib
from aimlutils.hyper_opt.launchers import job_ids, read_jobs, scheduler_for, study_queue
from aimlutils.hyper_opt.report import progress
from aimlutils.hyper_opt.schedulers import Scheduler, SubmitError
from aimlutils.hyper_opt.storage import open_for_command
from aimlutils.hyper_opt.storage.proxy import ProxyAddress, answers

#: How long ``cancel`` waits for cancelled workers to fail their own trials.
CANCEL_WAIT_S = 20.0


def status(args: argparse.Namespace, console: Console) -> int:
    """Trials by state against ``n_trials``, the best so far, running trials and the jobs."""
    cfg = load_for_study(args.hyper, args.model)
    storage = open_for_command(cfg.storage, cfg.optuna.storage_wait_s)
    study = study_lib.load(cfg, storage, 1)
    scheduler = scheduler_for(cfg)
    queue: dict[str, str] | None = None  # unknown
    jobs = read_jobs(cfg.paths)
    if scheduler is not None and jobs:
        try:
            # The one scheduler call of this command, about every job of the study (shown below);
            # only the asker's own jobs are judged by their absence (recover_study's study_jobs).
            queue = scheduler.queue([job.job_id for job in jobs])
        except SubmitError as err:
            say(console, f"Could not read the queue, so no trial was judged by it: {err}")
    answer = queue
    recovered = recover_study(
        study,
        storage,
        cfg.paths,
        (lambda: answer) if scheduler and answer is not None else None,
        cfg.optuna.max_retries,
        scheduler.job_alive if scheduler else alive,
        lambda: job_ids(cfg.paths),
    )
    if recovered:
        say(console, f"Trials {recovered} had no live worker: marked FAIL, parameters queued again.")
    snap = progress.snapshot(study, cfg.optuna.n_trials)
    say(console, f"Study {cfg.study_name!r} in {cfg.storage}")
    say(console, snap.line())
    stop = StudyStop.read(cfg.paths.stopped)
    if stop is not None:
        say(console, stop.message())
    marked = BadNodes(cfg.paths.bad_nodes).marks()
    if marked:
        off = " (ignored: optuna.bad_node_failures is null)" if cfg.optuna.bad_node_failures is None else ""
        table = Table(title=f"Nodes left out of the study, marked bad{off}")
        for column in ("node", "failed there in a row", "succeeded elsewhere since", "last error", "marked"):
            table.add_column(column)
        for node, evidence in sorted(marked.items()):
            trials = ", ".join(map(str, evidence.trials[-8:]))
            failed = f"{len(evidence.trials)} (trials {trials})" if evidence.trials else "?"
            wins = str(evidence.successes_elsewhere)
            table.add_row(node, failed, wins, evidence.last_error, evidence.marked_at)
        console.print(table)
        say(console, f"Once a node is repaired, delete its line from {cfg.paths.bad_nodes}.")
    if snap.best_value is not None:
        say(console, f"Best value {snap.best_value:.6g} with {snap.best_params}")
    accounted = scheduler.accounted_gpu_hours([job.job_id for job in jobs]) if scheduler and jobs else None
    for line in usage_lines(cfg, study, accounted):
        say(console, line)
    if cfg.optuna.proxy_section is not None:
        say(console, proxy_line(cfg))
    owners = RunningTrials.of(cfg.paths)
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
    if jobs:
        table = Table(title="Jobs")
        for column in ("job", "role", "workers", "submitted", "queue state"):
            table.add_column(column)
        for job in jobs:
            states = sorted(
                {s for j, s in (queue or {}).items() if j == job.job_id or j.startswith(job.job_id + "_")}
            )
            ended = "ended" if queue is not None else "unknown (the queue did not answer)"
            table.add_row(job.job_id, job.role, str(job.workers), job.submitted, ", ".join(states) or ended)
        console.print(table)
    return 0


def proxy_line(cfg: RunConfig) -> str:
    """Where the study's storage proxy is, and whether it answers."""
    address = ProxyAddress.read(cfg.paths.proxy_address)
    if address is None:
        return f"Storage proxy: none running ({cfg.paths.proxy_address} does not exist)"
    state = (
        "answering"
        if answers(address, timeout=5)
        else "NOT answering (optimize.py --reload starts a new one)"
    )
    return f"Storage proxy: {address}, {state}"


def cancel(args: argparse.Namespace, console: Console) -> int:
    """Cancel the study's jobs and mark the trials they ran FAIL (their parameters are queued again)."""
    cfg = load_for_study(args.hyper, args.model)
    scheduler = scheduler_for(cfg)
    jobs = read_jobs(cfg.paths)
    if scheduler is None or not jobs:
        say(console, f"No jobs recorded for study {cfg.study_name!r} in {cfg.save_path}.")
        return 0
    queue = study_queue(scheduler, cfg.paths)()
    live = [j.job_id for j in jobs if scheduler.job_alive(j.job_id, queue)]
    if live:
        scheduler.cancel(live)
    storage = open_for_command(cfg.storage, cfg.optuna.storage_wait_s)
    study = study_lib.load(cfg, storage, 1)
    owners = RunningTrials.of(cfg.paths)
    # Cancelled workers fail and re-queue their own trials; wait for them, then do it for them.
    deadline = time.monotonic() + CANCEL_WAIT_S
    while time.monotonic() < deadline:
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not any(_owned_by(owners.owner(t.number), live, scheduler) for t in running):
            break
        time.sleep(1.0)
    failed = recover_study(
        study,
        storage,
        cfg.paths,
        dict,
        cfg.optuna.max_retries,
        scheduler.job_alive,
        lambda: job_ids(cfg.paths),
    )
    say(console, f"Cancelled {len(live)} job(s): {', '.join(live) or 'none were still queued'}.")
    if failed:
        say(console, f"Trials {failed} were left RUNNING: marked FAIL, parameters queued again.")
    return 0


def _owned_by(owner: dict[str, Any] | None, job_ids: list[str], scheduler: Scheduler) -> bool:
    """Whether ``owner`` runs in one of ``job_ids`` (a job array's id covers its tasks)."""
    job = (owner or {}).get("job_id")
    return job is not None and any(scheduler.job_alive(j, {job: ""}) for j in job_ids)

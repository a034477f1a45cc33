"""The storage proxy as a small CPU job of the study's scheduler, submitted with the workers."""

from __future__ import annotations

import datetime
import shlex

from aimlutils.hyper_opt.config import RunConfig
from aimlutils.hyper_opt.launchers.base import WorkerCommand
from aimlutils.hyper_opt.launchers.jobs import JobRecord, JobScript, read_jobs
from aimlutils.hyper_opt.paths import StudyPaths
from aimlutils.hyper_opt.schedulers import Scheduler, SubmitError


def proxy_scheduler(cfg: RunConfig, scheduler: Scheduler) -> Scheduler:
    """``scheduler`` for the proxy's one job: the workers' options without GPUs, plus
    ``optuna.proxy.batch``."""
    proxy = cfg.optuna.proxy_section
    extra = dict(proxy.batch) if proxy is not None else {}
    batch = {**scheduler.cpu_batch(scheduler.section.batch), **extra}
    section = scheduler.section.model_copy(
        update={"batch": batch, "jobs": 1, "array": False, "gpus_per_node": None, "throttle": None}
    )
    return type(scheduler)(section, scheduler.save_path, scheduler.run)


def proxy_job(
    cfg: RunConfig, scheduler: Scheduler, command: WorkerCommand, setup: list[str], python: str
) -> JobScript:
    """The proxy's job script and its submit command."""
    own = proxy_scheduler(cfg, scheduler)
    path = cfg.paths.jobs / f"{scheduler.name}-proxy-{datetime.datetime.now():%Y%m%d-%H%M%S-%f}.sh"
    program = "aimlutils.hyper_opt.launchers.proxy_server"
    serve = [python, "-m", program, str(command.hyper), str(command.model)]
    lines = [
        "#!/bin/bash -l",
        *own.header(1, cfg.paths.jobs),
        "",
        f"# The storage proxy of study {cfg.study_name!r}: the workers reach {cfg.storage} through it.",
        "# It writes its address to save_path/proxy.json and ends once the study is done.",
        *setup,
        "set -u",
        f"exec {shlex.join(serve)}",
        "",
    ]
    submit = [own.passing(c, cfg.storage.variables()) for c in own.submissions(path, 1)]
    return JobScript("\n".join(lines), path, [shlex.join(c) for c in submit])


def live_proxy_job(paths: StudyPaths, scheduler: Scheduler) -> JobRecord | None:
    """The study's proxy job while it is queued or running, else ``None``."""
    proxies = [j for j in read_jobs(paths) if j.role == "proxy"]
    if not proxies:
        return None
    try:
        queue = scheduler.queue([p.job_id for p in proxies])
    except SubmitError:
        return None  # cannot tell: one more proxy is cheaper than workers waiting for none
    latest = proxies[-1]
    return latest if scheduler.job_alive(latest.job_id, queue) else None

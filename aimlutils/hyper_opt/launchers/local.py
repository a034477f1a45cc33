"""Workers as processes on this machine: the default when ``hyper.yml`` names no scheduler."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from typing import IO

from rich.console import Console
from rich.live import Live

from aimlutils.hyper_opt import progress
from aimlutils.hyper_opt import study as study_lib
from aimlutils.hyper_opt._text import tail
from aimlutils.hyper_opt.config import RunConfig
from aimlutils.hyper_opt.coordination import recover_study
from aimlutils.hyper_opt.launchers.base import Launcher, save_run_configs
from aimlutils.hyper_opt.storage import open_storage

logger = logging.getLogger(__name__)

#: How long workers get to mark their running trials FAIL after a stop request.
STOP_GRACE_S = 30.0


def visible_gpus(environ: Mapping[str, str] = os.environ) -> list[str]:
    """GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else ``nvidia-smi -L``."""
    if "CUDA_VISIBLE_DEVICES" in environ:
        ids = [g.strip() for g in environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
        return [] if ids in (["-1"], ["NoDevFiles"]) else ids
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=True)
    except (subprocess.SubprocessError, OSError):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


def default_workers(gpu: bool, gpus: list[str]) -> int:
    """One worker per visible GPU, else two."""
    return len(gpus) if gpu and gpus else 2


class LocalLauncher(Launcher):
    """Runs ``n_workers`` worker processes here, shows progress, and waits for them."""

    def __init__(self, cfg: RunConfig, console: Console | None = None, poll_s: float = 1.0) -> None:
        super().__init__(cfg)
        self.console = console or Console()
        self.poll_s = poll_s
        self.log_dir = cfg.paths.worker_logs

    def _env(self, index: int, gpus: list[str]) -> dict[str, str]:
        env = dict(os.environ)
        if self.cfg.optuna.gpu and gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
        return env

    def start(self, n_workers: int) -> list[subprocess.Popen[bytes]]:
        command = save_run_configs(self.cfg)
        gpus = visible_gpus()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        procs = []
        for index in range(n_workers):
            log: IO[bytes] = open(self.cfg.paths.worker_log(index), "ab")  # noqa: SIM115
            # A session of its own: Ctrl-C reaches the launcher only, which stops workers once.
            procs.append(
                subprocess.Popen(
                    command.argv(index, n_workers),
                    env=self._env(index, gpus),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            log.close()
        return procs

    def launch(self, n_workers: int) -> int:
        procs = self.start(n_workers)
        storage = open_storage(self.cfg.storage)
        study = study_lib.load(self.cfg, storage, n_workers)
        n_trials = self.cfg.optuna.n_trials
        try:
            with Live(console=self.console, refresh_per_second=2, transient=True) as live:
                # Poll every process (not any(), which stops early) so dead ones are reaped.
                while [p.poll() for p in procs].count(None):
                    live.update(progress.snapshot(study, n_trials).line())
                    time.sleep(self.poll_s)
        except KeyboardInterrupt:
            self.console.print("Stopping the workers; their running trials are marked FAIL ...")
            self.stop(procs)
            recover_study(study, storage, self.cfg.paths, None, max_retries=0)
            self.console.print("Stopped. The study is saved; set optuna.reload: 1 to continue it.")
            return 130
        # A worker killed mid-trial (OOM, kill -9) leaves its trial RUNNING; no zombie outlives the run.
        recover_study(study, storage, self.cfg.paths, None, self.cfg.optuna.max_retries)
        return self._report_failures(procs)

    def stop(self, procs: list[subprocess.Popen[bytes]]) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def _report_failures(self, procs: list[subprocess.Popen[bytes]]) -> int:
        failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode != 0]
        for index, code in failed:
            log = self.cfg.paths.worker_log(index)
            self.console.print(f"[red]worker {index} exited with code {code}[/red]; the end of {log}:")
            self.console.print(tail(log, 15, "(no log)"), markup=False, highlight=False)
        return 1 if failed else 0

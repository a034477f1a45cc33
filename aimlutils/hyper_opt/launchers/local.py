"""Workers as processes on this machine: the default when ``hyper.yml`` names no scheduler."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from typing import IO

import optuna
from optuna.storages import BaseStorage
from rich.console import Console
from rich.live import Live

from aimlutils.hyper_opt._text import tail
from aimlutils.hyper_opt.config import RunConfig
from aimlutils.hyper_opt.coordination import StudyStop, recover_study
from aimlutils.hyper_opt.coordination import study as study_lib
from aimlutils.hyper_opt.coordination.usage import spent_now
from aimlutils.hyper_opt.errors import ExitCode
from aimlutils.hyper_opt.launchers.base import Launcher, save_run_configs
from aimlutils.hyper_opt.launchers.local_proxy import LocalProxy
from aimlutils.hyper_opt.lifeline import Lifeline, StopRequest
from aimlutils.hyper_opt.report import progress
from aimlutils.hyper_opt.storage import open_storage
from aimlutils.hyper_opt.storage.resilient import StorageUnavailable

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


def gpu_groups(gpus: list[str], per_trial: int = 1) -> list[list[str]]:
    """``gpus`` in groups of ``per_trial`` consecutive ids; ids left over make no group.

    Example:
        >>> gpu_groups(["0", "1", "2", "3", "4"], 2)
        [['0', '1'], ['2', '3']]
    """
    return [gpus[i : i + per_trial] for i in range(0, len(gpus) - per_trial + 1, per_trial)]


def default_workers(gpu: bool, gpus: list[str], per_trial: int = 1) -> int:
    """One worker per ``per_trial`` visible GPUs, else two."""
    groups = len(gpu_groups(gpus, per_trial))
    return groups if gpu and groups else 2


class LocalLauncher(Launcher):
    """Runs ``n_workers`` worker processes here, shows progress, and waits for them.

    SIGINT (Ctrl-C), SIGTERM and SIGHUP to this process stop every worker the same way, workers
    still starting included; if this process dies without a word (SIGKILL, the OOM killer), its
    workers see their lifeline end and stop by themselves.
    """

    def __init__(self, cfg: RunConfig, console: Console | None = None, poll_s: float = 1.0) -> None:
        super().__init__(cfg)
        self.console = console or Console()
        self.poll_s = poll_s
        self.log_dir = cfg.paths.worker_logs
        self.stop_request = StopRequest()
        self._lifeline: Lifeline | None = None
        self.proxy: LocalProxy | None = None

    def _env(self, index: int, gpus: list[str]) -> dict[str, str]:
        """Worker ``index`` gets GPU group ``index`` of ``gpus`` (round robin past the last group)."""
        env = dict(os.environ)
        groups = gpu_groups(gpus, self.cfg.gpus_per_trial)
        if self.cfg.optuna.gpu and groups:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(groups[index % len(groups)])
        return env

    def start(self, n_workers: int) -> list[subprocess.Popen[bytes]]:
        """Start the workers; after a stop request (see :meth:`launch`), no more of them."""
        command = save_run_configs(self.cfg)
        gpus = visible_gpus()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self._lifeline is None:
            self._lifeline = Lifeline()
        if self.cfg.optuna.proxy_section is not None and self.proxy is None:
            self.proxy = LocalProxy(self.cfg, command, self._lifeline)
            self.proxy.start()
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for index in range(n_workers):
                if self.stop_request.requested:
                    break
                log: IO[bytes] = open(self.cfg.paths.worker_log(index), "ab")  # noqa: SIM115
                # A session of its own: Ctrl-C reaches the launcher only, which stops workers once.
                try:
                    procs.append(
                        subprocess.Popen(
                            command.argv(index, n_workers),
                            env={**self._env(index, gpus), **self._lifeline.env()},
                            stdin=subprocess.DEVNULL,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                            **self._lifeline.popen_kwargs(),
                        )
                    )
                finally:
                    log.close()
        except BaseException:
            self.stop(procs)  # e.g. out of processes or file descriptors: none left half-started
            raise
        return procs

    def launch(
        self, n_workers: int, study: optuna.Study | None = None, storage: BaseStorage | None = None
    ) -> int:
        """Run ``n_workers`` workers until they end. The caller's open ``study`` and its
        ``storage``, when given, save this process its own database connections."""
        # Signals are only noted while workers start and run, and acted on between two looks at
        # the study: a signal never cuts a storage write in half, nor a worker's start.
        with self.stop_request as request:
            procs: list[subprocess.Popen[bytes]] = []
            try:
                procs = self.start(n_workers)
                if study is None or storage is None:
                    storage = open_storage(self.cfg.storage)
                    study = study_lib.load(self.cfg, storage, n_workers)
                self._wait(procs, study)
                if request.requested:
                    self._say(
                        f"{request.name}: stopping the workers; their running trials are marked FAIL ..."
                    )
                    self.stop(procs)
                    recover_study(study, storage, self.cfg.paths, None, max_retries=0)
                    self._say("Stopped. The study is saved; set optuna.reload: 1 to continue it.")
                    return request.exit_code
            except BaseException:
                self.stop(procs)  # a failure of the launcher's own leaves no worker behind
                raise
            finally:
                if self.proxy is not None:
                    self.proxy.stop()
                self._close_lifeline()
        # A worker killed mid-trial (OOM, kill -9) leaves its trial RUNNING; no zombie outlives the run.
        try:
            recover_study(study, storage, self.cfg.paths, None, self.cfg.optuna.max_retries)
        except StorageUnavailable as err:
            self._say(f"Trials left RUNNING could not be failed now ({err}); a --reload does it.")
        stop = StudyStop.read(self.cfg.paths.stopped)
        if stop is not None:
            with contextlib.suppress(OSError):  # a terminal that hung up
                self.console.print(stop.message(), style="red", markup=False, highlight=False)
            return ExitCode.STUDY_STOPPED
        with contextlib.suppress(StorageUnavailable):
            if spent := spent_now(self.cfg, study.get_trials(deepcopy=False)):
                self._say(f"The study started no more trials: {spent}.")
        return self._report_failures(procs)

    def _wait(self, procs: list[subprocess.Popen[bytes]], study: optuna.Study) -> None:
        """Show progress until every worker has exited or a stop is requested."""
        n_trials = self.cfg.optuna.n_trials
        try:
            with Live(console=self.console, refresh_per_second=2, transient=True) as live:
                # Poll every process (not any(), which stops early) so dead ones are reaped.
                while not self.stop_request.requested and [p.poll() for p in procs].count(None):
                    live.update(self._progress_line(study, n_trials))
                    if self.proxy is not None:
                        self.proxy.keep_alive()
                    self._pause(self.poll_s)
        except OSError:
            if not self.stop_request.requested:
                raise
            # The terminal went away (SIGHUP): nothing to show the stop on, but it goes on.

    def _progress_line(self, study: optuna.Study, n_trials: int) -> str:
        # The workers decide what an outage means for them; this process only stops showing it.
        try:
            return progress.snapshot(study, n_trials).line()
        except StorageUnavailable as err:
            return f"(no progress to show: {err})"

    def _pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stop_request.requested and time.monotonic() < deadline:
            time.sleep(min(0.05, seconds))

    def _say(self, text: str) -> None:
        with contextlib.suppress(OSError):  # a terminal that hung up
            self.console.print(text)

    def _close_lifeline(self) -> None:
        if self._lifeline is not None:
            self._lifeline.close()
            self._lifeline = None

    def stop(self, procs: list[subprocess.Popen[bytes]]) -> None:
        """SIGTERM to every running worker; SIGKILL to those still there after ``STOP_GRACE_S``."""
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

"""The storage proxy of a local run: one more process, started, watched and stopped by optimize.py."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

from aimlutils.hyper_opt.config import RunConfig
from aimlutils.hyper_opt.launchers.base import WorkerCommand
from aimlutils.hyper_opt.lifeline import Lifeline
from aimlutils.hyper_opt.storage.proxy import ProxyAddress, answers

logger = logging.getLogger(__name__)

#: How long a new proxy gets to answer before the run gives up on it.
START_TIMEOUT_S = 120.0


class LocalProxy:
    """The proxy process of a local study; restarted when it dies while workers still run."""

    def __init__(self, cfg: RunConfig, command: WorkerCommand, lifeline: Lifeline) -> None:
        self.cfg = cfg
        self.command = command
        self.lifeline = lifeline
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def start(self) -> None:
        """Start the proxy and wait until it answers (workers would wait for it anyway)."""
        self.cfg.paths.proxy_address.unlink(missing_ok=True)
        log = open(self.cfg.paths.worker_logs / "proxy.log", "ab")  # noqa: SIM115 - the child keeps it
        argv = [
            sys.executable,
            "-m",
            "aimlutils.hyper_opt.launchers.proxy_server",
            str(self.command.hyper),
            str(self.command.model),
        ]
        # Tied to optimize.py as the workers are: it goes when optimize.py dies.
        self.proc = subprocess.Popen(
            argv,
            env={**os.environ, **self.lifeline.env()},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **self.lifeline.popen_kwargs(),
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and self.proc.poll() is None:
            address = ProxyAddress.read(self.cfg.paths.proxy_address)
            if address is not None and address.pid == self.proc.pid and answers(address, timeout=2):
                return
            time.sleep(0.2)
        raise RuntimeError(
            f"the storage proxy did not start (see {self.cfg.paths.worker_logs / 'proxy.log'})"
        )

    def keep_alive(self) -> None:
        """Start a new proxy if this one died; its waiting workers carry on with the new one."""
        if self.proc is not None and self.proc.poll() is not None:
            self.restarts += 1
            logger.warning("the storage proxy ended (exit code %s); starting a new one", self.proc.returncode)
            self.start()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

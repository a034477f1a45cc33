"""Nothing outlives the process that started it: stop requests, parent-death watches, guards.

- :class:`StopRequest`: SIGINT, SIGTERM and SIGHUP become one noted request to stop, which the
  local launcher acts on at its next safe point, so a signal never cuts a storage write in half.
  A signal that was ignored when the request was installed (``nohup``) stays ignored.
- :class:`Lifeline`: a pipe whose write end only the launcher holds. Each worker gets the read
  end; the kernel closes the write end when the launcher dies, however it dies (SIGKILL, the OOM
  killer), and :func:`watch_parent`, called in the worker, then sends the worker SIGTERM: its usual
  stop (running trial failed, parameters queued again). On Linux the launcher also gives each
  worker a parent-death signal before it runs any of its own code, so a worker still starting up
  is stopped at once too.
- :class:`GroupGuard`: a tiny watchdog process per command that a command objective runs; it
  stops the command's process group if the worker dies without doing so itself.

This module imports only the standard library: the guard runs it as a script
(``python -I -S lifeline.py``), which starts in milliseconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

#: Signals that stop a local run.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: The environment variable that tells a worker which file descriptor is its lifeline.
LIFELINE_ENV = "AIMLUTILS_LIFELINE_FD"
#: ``prctl`` option: the signal this process gets when the thread that started it exits.
PR_SET_PDEATHSIG = 1
#: This file, which the guard process runs as a script.
_SCRIPT = os.path.abspath(__file__)

logger = logging.getLogger(__name__)


class StopRequest:
    """While installed (``with``), SIGINT, SIGTERM and SIGHUP only note that a stop was asked.

    The first signal is kept in :attr:`signum`; later ones change nothing. Installing needs the
    main thread; elsewhere the handlers are left as they are. Leaving restores them.

    Example:
        >>> import os, time
        >>> with StopRequest() as request:
        ...     os.kill(os.getpid(), signal.SIGTERM)
        ...     deadline = time.monotonic() + 5
        ...     while not request.requested and time.monotonic() < deadline:
        ...         time.sleep(0.01)
        >>> request.signum == signal.SIGTERM, request.exit_code
        (True, 143)
    """

    def __init__(self, signals: Sequence[int] = STOP_SIGNALS) -> None:
        self.signals = tuple(signals)
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        self.signum = None
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum in self.signals:
            previous = signal.getsignal(signum)
            if previous == signal.SIG_IGN:
                continue
            self._previous[signum] = signal.SIG_DFL if previous is None else previous
            signal.signal(signum, self._note)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def _note(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    @property
    def exit_code(self) -> int:
        """The shell's code for a stop by this signal: 128 + its number (130 for Ctrl-C)."""
        return 128 + (self.signum or 0)


def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` on Linux, else ``None``."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


class Lifeline:
    """The launcher's end of the workers' lifeline; the workers stop when it is closed.

    The write end stays in this process only (it is not inherited), so it closes when this
    process exits or is killed; :func:`watch_parent` in each worker sees the pipe's end.
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        self._prctl = _prctl()

    def env(self) -> dict[str, str]:
        """Environment entries for a worker."""
        return {LIFELINE_ENV: str(self._read)}

    def popen_kwargs(self) -> dict[str, Any]:
        """Arguments for ``subprocess.Popen`` that start a worker on this lifeline."""
        kwargs: dict[str, Any] = {"pass_fds": (self._read,)}
        # The parent-death signal fires when the *thread* that started the worker ends, and
        # Python code between fork and exec is only safe in a process with no other thread; so
        # only then. The pipe covers the rest.
        if self._prctl is not None and threading.active_count() == 1:
            kwargs["preexec_fn"] = _die_with_parent(self._prctl, os.getpid())
        return kwargs

    def close(self) -> None:
        """Cut the lifeline: every worker still on it stops."""
        for fd in (self._write, self._read):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._read = self._write = -1


def _die_with_parent(prctl: Callable[..., int], parent: int) -> Callable[[], None]:
    def preexec() -> None:  # in the child, between fork and exec
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the launcher died before the call above: nothing to start for
            os._exit(1)

    return preexec


def watch_parent(signum: int = signal.SIGTERM, environ: Any = os.environ) -> bool:
    """In a worker: send ``signum`` to this process once the launcher that started it is gone.

    Call it after the handler for ``signum`` is installed. A launcher that died before this call
    is seen at once (the pipe's end stays readable). Returns whether there was a lifeline.
    """
    value = environ.pop(LIFELINE_ENV, None)  # not for the processes this one starts
    if value is None:
        return False
    try:
        fd = int(value)
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
        os.set_inheritable(fd, False)
    except (ValueError, OSError):
        return False
    threading.Thread(target=_wait_for_end, args=(fd, signum), name="lifeline", daemon=True).start()
    return True


def _wait_for_end(fd: int, signum: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except OSError:
        pass
    logger.warning("the process that started this one is gone: stopping")
    os.kill(os.getpid(), signum)


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs.

    Zombies do not count: an orphaned child that exited waits for init to reap it, which some
    container inits do only every few seconds. Without ``/proc`` (macOS) any member counts.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # After the command's name, which may hold spaces: state, ppid, pgrp.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def stop_group(pgid: int, grace_s: float, reap: Callable[[], object] | None = None) -> None:
    """Stop process group ``pgid``: SIGTERM, then SIGKILL to what is left after ``grace_s``.

    ``reap`` (``Popen.poll`` of the group's leader, for its parent) runs while waiting, so an
    exited leader stops counting as a member.
    """
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, grace_s)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return  # no process of the group is left
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if reap is not None:
                reap()
            if not group_alive(pgid):
                return
            time.sleep(0.02)


class GroupGuard:
    """A watchdog process that stops a process group if this process dies before it says so.

    Start it before the command, :meth:`watch` the command's group once it runs, and
    :meth:`release` it after stopping the group yourself. If this process ends first (even by
    SIGKILL), the guard sees its pipe's end and stops the group, SIGKILL after ``grace_s``.
    """

    def __init__(self, grace_s: float) -> None:
        read, self._write = os.pipe()
        try:
            # A session of its own, so a signal meant for this process's group spares it.
            self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                [sys.executable, "-I", "-S", _SCRIPT, str(grace_s)],
                stdin=read,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError:
            self.proc = None  # no guard: the command runs as it did without one
        finally:
            os.close(read)

    def watch(self, pgid: int) -> None:
        self._send(f"{pgid}\n")

    def release(self) -> None:
        """Tell the guard the group is taken care of, and wait for it to exit."""
        self._send("done\n")
        if self._write >= 0:
            os.close(self._write)
            self._write = -1
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _send(self, line: str) -> None:
        if self._write < 0:
            return
        with contextlib.suppress(OSError):  # BrokenPipeError: the guard is gone
            os.write(self._write, line.encode())


def _guard_main(argv: Sequence[str]) -> int:
    """The guard process: reads the group to watch from stdin; its end before ``done`` stops it."""
    grace_s = float(argv[0])
    pgid = None
    for line in sys.stdin.buffer:
        text = line.strip()
        if text == b"done":
            return 0
        if text.isdigit():
            pgid = int(text)
    if pgid is not None:
        stop_group(pgid, grace_s)
    return 0


if __name__ == "__main__":
    sys.exit(_guard_main(sys.argv[1:]))

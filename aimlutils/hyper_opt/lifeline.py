"""Nothing outlives the process that started it: stop requests and parent-death watches.

- :class:`StopRequest`: SIGINT, SIGTERM and SIGHUP become one noted request to stop, which the
  local launcher acts on at its next safe point, so a signal never cuts a storage write in half.
  A signal that was ignored when the request was installed (``nohup``) stays ignored.
- :class:`Lifeline`: a pipe whose write end only the launcher holds. Each worker gets the read
  end; the kernel closes the write end when the launcher dies, however it dies (SIGKILL, the OOM
  killer), and :func:`watch_parent`, called in the worker, then sends the worker SIGTERM: its usual
  stop (running trial failed, parameters queued again). On Linux the launcher also gives each
  worker a parent-death signal before it runs any of its own code, so a worker still starting up
  is stopped at once too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import stat
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType, TracebackType
from typing import Any

#: Signals that stop a local run.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: The environment variable that tells a worker which file descriptor is its lifeline.
LIFELINE_ENV = "AIMLUTILS_LIFELINE_FD"
#: ``prctl`` option: the signal this process gets when the thread that started it exits.
PR_SET_PDEATHSIG = 1

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

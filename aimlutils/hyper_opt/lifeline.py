"""Nothing outlives the process that started it.

:class:`StopRequest`: SIGINT, SIGTERM and SIGHUP become one noted request to stop, which the local
launcher acts on at its next safe point, so a signal never cuts a storage write in half. A signal
that was ignored when the request was installed (``nohup``) stays ignored.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence
from types import FrameType, TracebackType
from typing import Any

#: Signals that stop a local run.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


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

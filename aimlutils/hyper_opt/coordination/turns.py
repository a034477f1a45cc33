"""Periodic jobs of a study done by one worker at a time, however many there are.

Looking for dead workers' trials reads an owner file per running trial: done by each of a
thousand workers every minute, that is a million reads a minute on the file system's metadata
server. A turn makes it one sweep per interval for the whole study.
"""

from __future__ import annotations

import time
from pathlib import Path

from aimlutils.hyper_opt.storage.locks import FileLock


class StudyTurn:
    """Says yes to one caller per ``interval_s`` among all the workers of a study.

    Example:
        >>> import tempfile
        >>> turn = StudyTurn(Path(tempfile.mkdtemp()) / ".sweep.turn")
        >>> turn.take(60), turn.take(60), turn.take(0)
        (True, False, True)
    """

    def __init__(self, path: Path) -> None:
        self.lock = FileLock(path)
        # The latest turn this caller saw taken: turns only move forward, so until interval_s
        # after it the answer is no without a look at the file (a worker asks before each trial).
        self._last_seen = 0.0

    def take(self, interval_s: float) -> bool:
        """``True`` when no one took the turn in the last ``interval_s`` seconds (it is now yours)."""
        if time.time() - self._last_seen < interval_s:
            return False
        if not self.lock.acquire(blocking=False):
            return False  # someone is taking it right now
        try:
            with self.lock.text() as fh:
                try:
                    last = float(fh.read() or 0)
                except ValueError:
                    last = 0.0
                now = time.time()
                self._last_seen = max(self._last_seen, last)
                if now - last < interval_s:
                    return False
                fh.seek(0)
                fh.truncate()
                fh.write(repr(now))
                self._last_seen = now
                return True
        finally:
            self.lock.release()

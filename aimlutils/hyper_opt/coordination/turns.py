"""Periodic jobs of a study done by one worker at a time, however many there are.

Looking for dead workers' trials reads an owner file per running trial: done by each of a
thousand workers every minute, that is a million reads a minute on the file system's metadata
server. A turn makes it one sweep per interval for the whole study.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path

from aimlutils.hyper_opt.storage.locks import FileLock


class StudyTurn:
    """Says yes to one caller per ``interval_s`` among all the workers of a study.

    No clock of one host is compared with another's (a host whose clock is an hour ahead would
    otherwise stop every other host's turns for an hour): the turn file holds a stamp that each
    taker changes, and a caller takes the turn once the stamp has stayed the same for
    ``interval_s`` by its own clock. A caller that has just started waits one interval first,
    unless no one ever took a turn.

    Example:
        >>> import tempfile
        >>> turn = StudyTurn(Path(tempfile.mkdtemp()) / ".sweep.turn")
        >>> turn.take(60), turn.take(60), turn.take(0)
        (True, False, True)
    """

    def __init__(self, path: Path) -> None:
        self.lock = FileLock(path)
        self._stamp: str | None = None  # the stamp last seen in the file
        # When, by this process's clock, the file last showed a new stamp (or this caller wrote
        # one): until interval_s after it the answer is no without a look at the file.
        self._since = -float("inf")

    def take(self, interval_s: float) -> bool:
        """``True`` when no one took the turn in the last ``interval_s`` seconds (it is now yours)."""
        now = time.monotonic()
        if now - self._since < interval_s:
            return False
        if not self.lock.acquire(blocking=False):
            return False  # someone is taking it right now
        try:
            with self.lock.text() as fh:
                stamp = fh.read().strip()
                if stamp and stamp != self._stamp:  # taken since this caller last looked
                    self._stamp, self._since = stamp, now
                    return False
                mine = f"{socket.gethostname()} {os.getpid()} {uuid.uuid4().hex}"
                fh.seek(0)
                fh.truncate()
                fh.write(mine)
                self._stamp, self._since = mine, now
                return True
        finally:
            self.lock.release()

"""Which worker runs each RUNNING trial: a small file per trial in ``save_path/running/``.

Kept on the shared file system rather than in the storage: a storage write at every trial start
would cost journal-file studies a lock and an fsync per trial. Any storage kind can then tell a
dead worker's trial from a live one.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from aimlutils.hyper_opt.paths import StudyPaths


class RunningTrials:
    """``save_path/running/<trial number>.json``: who runs each RUNNING trial.

    Example:
        >>> import tempfile
        >>> running = RunningTrials(Path(tempfile.mkdtemp()))
        >>> running.mark(3, {"host": "node1", "pid": 42})
        >>> running.owner(3)
        {'host': 'node1', 'pid': 42}
        >>> running.clear(3); running.owner(3) is None
        True
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        # A plain string, not a Path: a path built and opened at each trial start and end costs
        # a cheap trial more Python calls than the file operation itself.
        self._prefix = os.path.join(folder, "")

    @classmethod
    def of(cls, paths: StudyPaths) -> RunningTrials:
        return cls(paths.running)

    def _path(self, number: int) -> str:
        return f"{self._prefix}{number}.json"

    def mark(self, number: int, identity: dict[str, Any]) -> None:
        # Written in place: a reader that catches half a file sees no owner, which only delays
        # the recovery of a dead worker's trial to its next look.
        data, path = json.dumps(identity).encode(), self._path(number)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        except FileNotFoundError:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def clear(self, number: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(number))

    def written_at(self, number: int) -> float | None:
        """When the trial's owner file was written, by the file system's clock (the one clock
        every host of a study shares), or ``None`` without one."""
        try:
            return os.stat(self._path(number)).st_mtime
        except OSError:
            return None

    def owner(self, number: int) -> dict[str, Any] | None:
        try:
            with open(self._path(number)) as fh:
                data = json.loads(fh.read())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

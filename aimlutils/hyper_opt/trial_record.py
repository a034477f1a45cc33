"""What the package stores about each trial, and which worker runs which trial right now.

A finished trial carries one user attribute, written in one storage operation: every value
``train`` returned, the worker that ran it, and why it failed. One write matters: on a journal
file each write takes a lock and an fsync, and trials of cheap models are dominated by them.

While a trial runs, its worker's identity (host, pid, job id) is a small file in
``save_path/running/``, so a dead worker's trial can be found on any storage kind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

#: The user attribute holding ``{"results": {...}, "worker": {...}, "fail_reason": "..."}``.
RECORD_ATTR = "record"
#: ``{name: value}`` written into the model config where it differs from ``trial.params[name]``.
APPLIED_ATTR = "applied"
#: Set on a re-queued trial: the number of the trial whose parameters it runs again.
RETRY_OF_ATTR = "retry_of"
#: Set on a re-queued trial: how many times its parameters have been re-queued.
RETRIES_ATTR = "retries"


def write_record(trial: optuna.trial.BaseTrial, **fields: Any) -> None:
    """Store ``fields`` (``results``, ``worker``, ``fail_reason``) on ``trial`` in one write."""
    trial.set_user_attr(RECORD_ATTR, {k: v for k, v in fields.items() if v is not None})


def read_record(trial: FrozenTrial) -> dict[str, Any]:
    record = trial.user_attrs.get(RECORD_ATTR)
    return record if isinstance(record, dict) else {}


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

    def _path(self, number: int) -> Path:
        return self.folder / f"{number}.json"

    def mark(self, number: int, identity: dict[str, Any]) -> None:
        # Written in place: a reader that catches half a file sees no owner, which only delays
        # the recovery of a dead worker's trial to its next look.
        try:
            self._path(number).write_text(json.dumps(identity))
        except FileNotFoundError:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._path(number).write_text(json.dumps(identity))

    def clear(self, number: int) -> None:
        self._path(number).unlink(missing_ok=True)

    def owner(self, number: int) -> dict[str, Any] | None:
        try:
            data = json.loads(self._path(number).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

"""Journal storages: the journal file (the default) and Redis.

A journal storage appends one entry per write and replays the entries of other processes; every
append to a file takes a lock and an fsync, so a trial's record is held back and appended with
the trial's tell, in one append (:class:`HeldAppends`).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from optuna.storages import BaseStorage, JournalStorage
from optuna.storages.journal import BaseJournalBackend, JournalFileBackend, JournalRedisBackend

from aimlutils.hyper_opt._optuna import BaseJournalFileLock
from aimlutils.hyper_opt.stop import StopSignal
from aimlutils.hyper_opt.storage._base import Opened, StorageKind, register
from aimlutils.hyper_opt.storage.locks import FileLock
from aimlutils.hyper_opt.storage.trial_writes import TrialWrites

#: The journal file that holds a study when ``optuna.storage`` is not given.
DEFAULT_JOURNAL = "study.journal"


class HeldAppends(BaseJournalBackend):
    """A journal backend whose next append can be held back and made with the append after it.

    :meth:`hold_next` is called right before the write to hold (a trial's record, written just
    before the trial's tell); that append is kept in memory and written together with the next
    one, so a trial costs the same number of locked, fsynced appends as in plain Optuna. Nobody
    reads a trial's record before its tell; a worker that dies in between loses the record with
    the tell.

    The journal reads the file after each write, to take in its own and other workers' entries;
    after a held append there is nothing of its own to take in, and the others' wait for the next
    read a moment later, so that read is skipped. All of it is per thread: threads of one
    process may share a journal storage, each running its own trials.
    """

    def __init__(self, backend: BaseJournalBackend) -> None:
        self._backend = backend
        self._local = threading.local()

    def hold_next(self) -> None:
        """Hold this thread's next append until its append after that."""
        self._local.hold = True

    def drop_held(self) -> None:
        """Forget this thread's held entries (their write was refused: the trial ended elsewhere)."""
        self._local.hold = False
        self._local.held = []

    def _held(self) -> list[dict[str, Any]]:
        held: list[dict[str, Any]] | None = getattr(self._local, "held", None)
        if held is None:
            held = self._local.held = []
        return held

    def read_logs(self, log_number_from: int) -> Iterable[dict[str, Any]]:
        if getattr(self._local, "skip_read", False):
            self._local.skip_read = False
            return ()
        return self._backend.read_logs(log_number_from)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        if getattr(self._local, "hold", False):
            self._local.hold = False
            self._held().extend(logs)
            self._local.skip_read = True
            return
        # Cleared only once written: a write that fails (a file server hiccup) is tried again
        # with the held entries still in it.
        held = self._held()
        self._backend.append_logs(held + logs)
        held.clear()


class JournalTrialWrites(TrialWrites):
    """A trial's record rides in the append of the trial's tell."""

    def __init__(self, backend: HeldAppends) -> None:
        self.backend = backend

    def hold_attr(self, storage: BaseStorage, trial_id: int, key: str, value: Any) -> None:
        self.backend.hold_next()
        storage.set_trial_user_attr(trial_id, key, value)

    def drop(self, trial_id: int) -> None:
        self.backend.drop_held()


class JournalAppendLock(BaseJournalFileLock):
    """The journal file's write lock, as a blocking POSIX record lock (the claim lock's kind).

    Optuna's own journal locks create a lock file and delete it, and a waiter polls for it with
    a backoff of up to a second. When a thousand workers end their trials together, the lock
    then sits free while its waiters sleep, and every poll is a file creation on the file
    system's metadata server. A ``lockf`` waiter sleeps in the kernel until the lock is let go,
    and a dead holder's lock goes with its process, with no grace period to wait out. Everything
    that writes a study's journal through this package takes it (workers, optimize.py, the
    Python API); a script of the user's that writes to the same journal file with Optuna's own
    lock while workers run is not excluded by it.

    Example:
        >>> import tempfile
        >>> lock = JournalAppendLock(tempfile.mkdtemp() + "/journal.log")
        >>> lock.acquire(), lock.release()
        (True, None)
    """

    def __init__(self, journal_path: str) -> None:
        self._lock = FileLock(Path(journal_path + ".lockf"))
        self._shield: contextlib.AbstractContextManager[None] | None = None  # while held

    def acquire(self) -> bool:
        # A worker's training is interrupted by SIGTERM wherever it is, appends included: one
        # interrupted inside the lock would leave it taken for the worker's own clean-up.
        shield = StopSignal.shielded()
        shield.__enter__()
        try:
            self._lock.acquire()
        except BaseException:
            shield.__exit__(None, None, None)
            raise
        self._shield = shield
        return True

    def release(self) -> None:
        self._lock.release()
        shield, self._shield = self._shield, None
        if shield is not None:
            shield.__exit__(None, None, None)  # a stop noted meanwhile interrupts now


def _journal(backend: BaseJournalBackend) -> Opened:
    held = HeldAppends(backend)
    return Opened(JournalStorage(held), JournalTrialWrites(held))


@register
class JournalFile(StorageKind):
    """A journal file on a shared file system (the default): any number of workers, no server."""

    name, title = "journal", "the journal file"
    paths = True

    def location(self, scheme: str, rest: str, base_dir: Path) -> str:
        return str(Path(rest) if Path(rest).is_absolute() else base_dir / rest)

    def open(self, location: str, connections: int, name: str) -> Opened:
        Path(location).parent.mkdir(parents=True, exist_ok=True)
        return _journal(JournalFileBackend(location, lock_obj=JournalAppendLock(location)))

    def exists(self, location: str) -> bool:
        return Path(location).exists()


@register
class Redis(StorageKind):
    """A journal in Redis: no file system needed, every worker replays the study's entries."""

    name, title = "redis", "Redis"
    schemes, driver = ("redis", "rediss"), ("redis", "redis")
    # What redis-cli reads; redis-py does not.
    password_env = "REDISCLI_AUTH"  # noqa: S105 - a variable's name

    def open(self, location: str, connections: int, name: str) -> Opened:
        return _journal(JournalRedisBackend(location))

    def is_outage(self, err: BaseException) -> bool:
        exceptions = sys.modules.get("redis.exceptions")  # not loaded: not a Redis error
        return exceptions is not None and isinstance(
            err, (exceptions.ConnectionError, exceptions.TimeoutError)
        )

    def is_driver_error(self, err: BaseException) -> bool:
        exceptions = sys.modules.get("redis.exceptions")
        return exceptions is not None and isinstance(err, exceptions.RedisError)

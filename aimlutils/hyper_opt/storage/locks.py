"""One exclusive file lock for every cross-worker lock of a study: processes on any node, and threads.

POSIX record locks (``lockf``) hold across the nodes of a cluster on NFS, where ``flock`` may
not. They belong to a process, though: two threads of one process would both "hold" one, and
closing *any* descriptor of the file drops every lock the process has on it. So each process
keeps one descriptor and one thread lock per path, shared by every :class:`FileLock` of it.

The kernel's deadlock check counts processes too: a thread holding one lock file while another
thread of its process waits for a second, held by a process that now asks for the first, looks
to it like a deadlock (``EDEADLK``). Locks are only ever nested in one order (the claim lock,
then the journal file's append lock, :class:`aimlutils.hyper_opt.storage.JournalAppendLock`),
so there is none: the waiter tries again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

_registry_lock = threading.Lock()
_shared: dict[str, _SharedFile] = {}


class _SharedFile:
    """This process's one descriptor of a lock file, and the lock its threads take first."""

    def __init__(self, path: Path, lock: bool = True) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A lock file is its owner's alone, whatever optuna.readable_by says: a reader of it
        # could take a shared lock and stall the study. A data file follows the umask.
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600 if lock else 0o666)
        if lock and os.fstat(self.fd).st_uid == os.getuid():
            os.fchmod(self.fd, 0o600)  # made by an earlier release, readable by all
        self.thread_lock = threading.Lock()


def _shared_file(path: Path, lock: bool = True) -> _SharedFile:
    key = os.path.abspath(path)
    with _registry_lock:
        if key not in _shared:
            _shared[key] = _SharedFile(Path(key), lock)
        return _shared[key]


#: How long a waiter told of a deadlock that is none pauses before it asks again, at most.
_DEADLOCK_PAUSE_S = 0.01


def _lockf(fd: int, blocking: bool) -> None:
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as err:
            if not blocking or err.errno != errno.EDEADLK:
                raise
        time.sleep(random.uniform(0, _DEADLOCK_PAUSE_S))  # noqa: S311 - jitter, not secrets


class FileLock:
    """An exclusive lock on ``path`` (created when missing, mode 0600), between processes and
    threads. ``data``: the file the lock guards, when others may read it (a team reads the
    results table); :attr:`fd` and :meth:`text` are then that file's, else the lock file's own.

    Example:
        >>> import tempfile
        >>> lock = FileLock(Path(tempfile.mkdtemp()) / "claim.lock")
        >>> with lock:
        ...     lock.held
        True
        >>> lock.acquire(blocking=False), lock.held
        (True, True)
        >>> lock.release()
    """

    def __init__(self, path: Path, data: Path | None = None) -> None:
        self.path = path
        self.data = data
        self._file: _SharedFile | None = None
        self.held = False

    def _shared(self) -> _SharedFile:
        if self._file is None:
            self._file = _shared_file(self.path)
        return self._file

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock; without ``blocking``, ``False`` at once when someone else has it."""
        shared = self._shared()
        if not shared.thread_lock.acquire(blocking):
            return False
        try:
            _lockf(shared.fd, blocking)
        except OSError:
            shared.thread_lock.release()
            if blocking:
                raise
            return False
        self.held = True
        return True

    def release(self) -> None:
        if not self.held or self._file is None:
            return
        self.held = False
        try:
            fcntl.lockf(self._file.fd, fcntl.LOCK_UN)
        finally:
            self._file.thread_lock.release()

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    @property
    def fd(self) -> int:
        """The locked file's descriptor (this process's one), for reads and writes under the lock."""
        if not self.held:
            raise RuntimeError(f"{self.path}: take the lock before reading or writing the file")
        return self.create()

    def create(self) -> int:
        """Make the guarded file (the lock file itself without ``data``) now; its descriptor."""
        return _shared_file(self.data, lock=False).fd if self.data else self._shared().fd

    @contextlib.contextmanager
    def text(self) -> Iterator[io.TextIOWrapper]:
        """The locked file itself, as text from its start, while the lock is held.

        Reads and writes go through the lock's own descriptor: opening the file a second time
        and closing it would drop the lock.
        """
        if not self.held:
            raise RuntimeError(f"{self.path}: take the lock before reading or writing the file")
        buffered = io.BufferedRandom(io.FileIO(self.fd, "r+", closefd=False))
        fh = io.TextIOWrapper(buffered, encoding="utf-8", newline="")
        try:
            fh.seek(0)
            yield fh
        finally:
            fh.flush()
            fh.detach()


#: NFS mount options under which a lock holds on one node only, or nowhere.
_LOCAL_LOCK_OPTIONS = ("nolock", "local_lock=all", "local_lock=posix")


def lock_problem(folder: Path, mounts: str | None = None) -> str | None:
    """Why POSIX record locks cannot keep the workers of ``folder`` apart, or ``None`` when they can.

    A study's claim lock, CSV and journal file rely on them across nodes. On NFS mounted with
    ``nolock`` or ``local_lock`` a lock succeeds but holds on its own node only (two workers on two
    nodes would take the last place of ``n_trials`` together, or write the journal at once); on a
    file system without them, ``lockf`` fails. ``mounts``: the text of ``/proc/mounts`` (read when
    not given).

    Example:
        >>> mounts = "srv:/home /home nfs4 rw,vers=4.2,local_lock=all 0 0\\n"
        >>> print(lock_problem(Path("/home/me/study"), mounts)[:68])
        /home/me/study is on NFS (srv:/home) mounted with local_lock=all: it
    """
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            mounts = ""
    where = os.path.realpath(folder)
    best: list[str] = []
    for line in mounts.splitlines():
        fields = line.split()
        under = len(fields) >= 4 and (where == fields[1] or where.startswith(fields[1].rstrip("/") + "/"))
        if under and (not best or len(fields[1]) > len(best[1])):
            best = fields
    if best and best[2].startswith("nfs"):
        bad = [o for o in best[3].split(",") if o in _LOCAL_LOCK_OPTIONS]
        if bad:
            return (
                f"{folder} is on NFS ({best[0]}) mounted with {bad[0]}: its file locks hold on one node "
                "only, so workers on several nodes could take one place of n_trials together. Choose a "
                "save_path on a file system with working locks (ask your admins), or keep the study in "
                "Redis or a database (optuna.storage) and run on one node"
            )
    return _try_lock(folder)


def _try_lock(folder: Path) -> str | None:
    """Take and let go of a lock in ``folder``, as the workers will; why not, when it fails."""
    probe = Path(folder) / ".lock-probe"
    try:
        fd = os.open(probe, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return None  # not writable: another check says so
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.lockf(fd, fcntl.LOCK_UN)
    except OSError as err:
        if err.errno in (errno.EAGAIN, errno.EACCES):
            return None  # held by someone: locks work
        return (
            f"{folder} does not take file locks ({os.strerror(err.errno or 0)}): choose a save_path on a "
            "file system with working POSIX locks, or keep the study in Redis or a database (optuna.storage)"
        )
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(probe)
    return None

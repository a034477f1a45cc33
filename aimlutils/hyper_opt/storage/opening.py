"""Where a study lives: journal file (default), SQLite, PostgreSQL, MySQL/MariaDB or Redis."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from optuna.exceptions import ExperimentalWarning
from optuna.storages import (
    BaseStorage,
    JournalStorage,
    RetryHeartbeatStaleTrialCallback,
    get_storage,
)
from optuna.storages.journal import (
    JournalFileBackend,
    JournalRedisBackend,
)
from optuna.storages.journal._file import BaseJournalFileLock

from aimlutils.hyper_opt.coordination.locks import FileLock
from aimlutils.hyper_opt.errors import ConfigError, Problem
from aimlutils.hyper_opt.stop import StopSignal
from aimlutils.hyper_opt.storage.resilient import (
    ResilientStorage,
    StorageUnavailable,
    resilient,
    with_retries,
)
from aimlutils.hyper_opt.storage.trial_writes import RecordWithNextWrite, WorkerRDBStorage

logger = logging.getLogger(__name__)

StorageKind = Literal["journal", "sqlite", "postgresql", "mysql", "redis"]

#: The journal file that holds a study when ``optuna.storage`` is not given.
DEFAULT_JOURNAL = "study.journal"

# A worker whose heartbeat is older than the grace period is dead: its RUNNING trial is failed
# and retried once. Long enough for a slow shared file system or a busy database.
HEARTBEAT_INTERVAL_S = 60
GRACE_PERIOD_S = 180
SQLITE_BUSY_TIMEOUT_S = 120
#: How long a call waits for the storage to come back by default (``optuna.storage_wait_s``).
DEFAULT_WAIT_S = 900.0
#: How long ``optimize.py`` and its commands wait for a storage that does not answer.
COMMAND_WAIT_S = 10.0
#: How long a worker's thread waits for its one database connection while the other thread has it.
POOL_TIMEOUT_S = 300

_SCHEMES: dict[str, StorageKind] = {
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
    "redis": "redis",
    "rediss": "redis",
}

# The driver each database URL needs, and the extra that installs it.
_DRIVERS = {"postgresql": ("psycopg", "postgres"), "mysql": ("pymysql", "mysql"), "redis": ("redis", "redis")}


@dataclasses.dataclass(frozen=True)
class StorageSpec:
    """A resolved storage location: a journal file path or a database URL."""

    kind: StorageKind
    location: str

    def __str__(self) -> str:
        return redact(self.location)


def redact(url: str) -> str:
    """Hide the password of a database URL in messages and logs."""
    return re.sub(r"(//[^:/@]+:)[^@]*@", r"\1***@", url)


def parse_storage(
    storage: str | None, storage_type: str | None, save_path: Path, base_dir: Path
) -> StorageSpec:
    """Resolve ``optuna.storage`` / ``optuna.storage_type`` into a :class:`StorageSpec`.

    A plain file name lies in ``save_path`` (the echo-opt convention); ``sqlite:///x.db`` is
    relative to ``base_dir``, the directory ``optimize.py`` was started in.

    Raises:
        ValueError: with a message that names the allowed forms.
    """
    if storage is None:
        if storage_type == "sqlite":
            raise ValueError("storage_type 'sqlite' needs optuna.storage (a file name in save_path)")
        return StorageSpec("journal", str(save_path / DEFAULT_JOURNAL))
    scheme, sep, rest = storage.partition("://")
    if not sep:
        # A plain file name: the echo-opt convention puts it in save_path.
        path = Path(os.path.expanduser(storage))
        path = path if path.is_absolute() else save_path / path
        if storage_type == "sqlite":
            return StorageSpec("sqlite", f"sqlite:///{path}")
        if storage_type == "maria":
            raise ValueError("storage_type 'maria' needs a URL such as mysql://user:password@host/database")
        return StorageSpec("journal", str(path))
    base = scheme.split("+", 1)[0].lower()
    if base not in _SCHEMES:
        raise ValueError(
            f"unknown storage URL scheme {scheme!r}; allowed: a journal file path, sqlite:///, "
            "postgresql://, mysql://, redis://"
        )
    kind = _SCHEMES[base]
    if kind == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise ValueError(
                "a SQLite URL needs a file: sqlite:///relative/path.db or sqlite:////abs/path.db"
            )
        # Workers may start in another directory, so the path is made absolute here.
        return StorageSpec("sqlite", f"sqlite:///{(base_dir / rest[1:]).resolve()}")
    if "+" not in scheme and kind in ("mysql", "postgresql"):
        # Name the driver the extras install: SQLAlchemy's default MySQL driver needs a C build,
        # and its default PostgreSQL driver changed between releases.
        driver = {"mysql": "mysql+pymysql", "postgresql": "postgresql+psycopg"}[kind]
        storage = f"{driver}://{rest}"
    return StorageSpec(kind, storage)


def missing_driver(spec: StorageSpec) -> str | None:
    """A message naming the package to install when ``spec`` needs a driver that is missing."""
    if spec.kind not in _DRIVERS:
        return None
    module, extra = _DRIVERS[spec.kind]
    scheme = spec.location.split("://", 1)[0]
    if spec.kind != "redis" and not scheme.endswith("+" + module):
        return None  # the user picked another driver; SQLAlchemy names it if it is missing
    if importlib.util.find_spec(module) is None:
        return f"{spec.kind} storage needs the {module} package: pip install 'aimlutils[{extra}]'"
    return None


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


def open_storage(
    spec: StorageSpec,
    retries: int = 1,
    wait_s: float = DEFAULT_WAIT_S,
    connections: int = 2,
    proxy: Callable[[], BaseStorage] | None = None,
    name: str = "aimlutils",
    open_wait_s: float | None = None,
    cached: bool = False,
) -> BaseStorage:
    """Open the storage, waiting out an outage of up to ``wait_s`` seconds at any call
    (``open_wait_s``, when given, for the first answer).

    RDB storages get a heartbeat so a dead worker's trial is retried, and a pool of
    ``connections``: a worker asks for one, which its heartbeat thread shares; ``name`` tells
    PostgreSQL whose connection it is (``application_name``). ``proxy`` opens a
    client of the study's storage proxy instead (it is asked again after each failed call, since
    a restarted proxy may listen elsewhere). ``cached`` keeps finished trials of an RDB storage
    in memory, as Optuna's own ``get_storage`` does, so a read of the study asks the database for
    new and unfinished trials only: for the storage proxy, which reads the whole study at every
    worker's ``study.ask``.
    """
    first = wait_s if open_wait_s is None else open_wait_s
    if proxy is not None:
        where = f"{spec} (through its proxy)"
        return resilient(_first_answer(proxy, first, where), wait_s, where, proxy)

    def opener() -> BaseStorage:
        backend = _open(spec, retries, connections, name)
        return get_storage(backend) if cached else backend

    return resilient(_first_answer(opener, first, str(spec)), wait_s, str(spec))


def _first_answer(opener: Callable[[], BaseStorage], wait_s: float, where: str) -> BaseStorage:
    """``opener()``, tried again while the storage cannot be reached, for up to ``wait_s``."""

    def attempt(first: bool) -> BaseStorage:
        # The Redis journal and the heartbeat are marked experimental by Optuna; they are
        # chosen on purpose here, so their warnings would only alarm users at every start.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return opener()

    return with_retries(attempt, wait_s, where)


def _open(spec: StorageSpec, retries: int, connections: int, name: str) -> BaseStorage:
    if spec.kind == "journal":
        Path(spec.location).parent.mkdir(parents=True, exist_ok=True)
        lock = JournalAppendLock(spec.location)
        return JournalStorage(RecordWithNextWrite(JournalFileBackend(spec.location, lock_obj=lock)))
    if spec.kind == "redis":
        return JournalStorage(JournalRedisBackend(spec.location))
    # With hundreds of workers, connections are what a database runs out of first (PostgreSQL
    # allows 100 by default): a worker holds one, shared with its heartbeat thread.
    engine_kwargs: dict[str, object] = {
        "pool_pre_ping": True,
        "pool_size": connections,
        "max_overflow": 0,
        "pool_timeout": POOL_TIMEOUT_S,
    }
    if spec.kind == "postgresql":
        # Shown in pg_stat_activity, so a DBA sees whose connections these are.
        engine_kwargs["connect_args"] = {"application_name": name[:63]}
    if spec.kind == "sqlite":
        Path(spec.location.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    return WorkerRDBStorage(
        spec.location,
        engine_kwargs=engine_kwargs,
        # Optuna's schema check nests a second connection, which one connection cannot give;
        # optimize.py, which opens the storage with two before any worker starts, makes it.
        skip_compatibility_check=connections < 2,
        heartbeat_interval=HEARTBEAT_INTERVAL_S,
        grace_period=GRACE_PERIOD_S,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=retries),
    )


def open_for_command(
    spec: StorageSpec, wait_s: float = DEFAULT_WAIT_S, open_wait_s: float = COMMAND_WAIT_S
) -> BaseStorage:
    """The storage for ``optimize.py`` and its commands: a storage that does not answer within
    ``open_wait_s`` is a config error naming it (password hidden), not a traceback; later
    outages are waited out for ``wait_s``, as in the workers."""
    try:
        return open_storage(spec, wait_s=wait_s, open_wait_s=open_wait_s)
    except StorageUnavailable as err:
        raise _unreachable(
            spec, err.__cause__ or err, "check that the server runs and the URL's host and port"
        ) from None
    except Exception as err:
        if type(err).__module__.split(".")[0] not in ("sqlalchemy", "redis", "psycopg", "pymysql"):
            raise
        # Refused for good: a wrong password, a database that does not exist.
        raise _unreachable(spec, err, "check the URL's user, password and database") from None


def _unreachable(spec: StorageSpec, cause: BaseException, advice: str) -> ConfigError:
    text = str(cause).strip()
    first_line = text.splitlines()[0] if text else type(cause).__name__
    return ConfigError(
        [Problem("optuna.storage", f"{spec} does not answer ({redact(first_line)}); {advice}")]
    )


def connections_held(storage: BaseStorage) -> int:
    """The database connections ``storage`` holds open in this process now (0 without a database).

    Example:
        >>> import tempfile
        >>> connections_held(JournalStorage(JournalFileBackend(tempfile.mkdtemp() + "/j.log")))
        0
    """
    backend = storage.backend if isinstance(storage, ResilientStorage) else storage
    engine = getattr(backend, "engine", None)
    if engine is None:
        return 0
    return int(engine.pool.checkedin() + engine.pool.checkedout())


def study_exists(storage: BaseStorage, name: str) -> bool:
    return any(s.study_name == name for s in storage.get_all_studies())

"""Opening a study's storage: ``optuna.storage`` resolved to a kind and a location, then opened
behind the retries that wait out outages."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage, get_storage

from aimlutils.hyper_opt.errors import ConfigError, Problem
from aimlutils.hyper_opt.storage._base import (
    StorageSpec,
    allowed_forms,
    kind_of_scheme,
    path_kind,
    redact,
)
from aimlutils.hyper_opt.storage.journal import DEFAULT_JOURNAL
from aimlutils.hyper_opt.storage.resilient import (
    ResilientStorage,
    StorageUnavailable,
    resilient,
    with_retries,
)

T = TypeVar("T")

#: How long a call waits for the storage to come back by default (``optuna.storage_wait_s``).
DEFAULT_WAIT_S = 900.0
#: How long ``optimize.py`` and its commands wait for a storage that does not answer.
COMMAND_WAIT_S = 10.0


def parse_storage(
    storage: str | None, storage_type: str | None, save_path: Path, base_dir: Path
) -> StorageSpec:
    """Resolve ``optuna.storage`` / ``optuna.storage_type`` into a :class:`StorageSpec`.

    A plain file name lies in ``save_path`` (the echo-opt convention); ``sqlite:///x.db`` is
    relative to ``base_dir``, the directory ``optimize.py`` was started in.

    Raises:
        ValueError: with a message that names the allowed forms.

    Example:
        >>> parse_storage("postgres://u@h/db", None, Path("/s"), Path("/b"))
        StorageSpec(kind='postgresql', location='postgresql+psycopg://u@h/db')
    """
    if storage is None:
        if storage_type == "sqlite":
            raise ValueError("storage_type 'sqlite' needs optuna.storage (a file name in save_path)")
        return StorageSpec(path_kind().name, str(save_path / DEFAULT_JOURNAL))
    scheme, sep, rest = storage.partition("://")
    if not sep:
        # A plain file name: the echo-opt convention puts it in save_path.
        path = Path(os.path.expanduser(storage))
        path = path if path.is_absolute() else save_path / path
        if storage_type == "sqlite":
            return StorageSpec("sqlite", f"sqlite:///{path}")
        if storage_type == "maria":
            raise ValueError("storage_type 'maria' needs a URL such as mysql://user:password@host/database")
        kind = path_kind()
        return StorageSpec(kind.name, kind.location("", str(path), save_path))
    kind_or_none = kind_of_scheme(scheme)
    if kind_or_none is None:
        raise ValueError(f"unknown storage URL scheme {scheme!r}; allowed: {allowed_forms()}")
    return StorageSpec(kind_or_none.name, kind_or_none.location(scheme, rest, base_dir))


def missing_driver(spec: StorageSpec) -> str | None:
    """A message naming the package to install when ``spec`` needs a driver that is missing."""
    return spec.storage_kind.missing_driver(spec.location)


def open_storage(
    spec: StorageSpec,
    wait_s: float = DEFAULT_WAIT_S,
    connections: int = 2,
    proxy: Callable[[], BaseStorage] | None = None,
    name: str = "aimlutils",
    open_wait_s: float | None = None,
    cached: bool = False,
) -> ResilientStorage:
    """Open the storage, waiting out an outage of up to ``wait_s`` seconds at any call
    (``open_wait_s``, when given, for the first answer).

    A database kind opens a pool of ``connections``: a worker asks for one, which its heartbeat
    thread shares; ``name`` tells the server whose connections they are. ``proxy`` opens a
    client of the study's storage proxy instead (it is asked again after each failed call, since
    a restarted proxy may listen elsewhere). ``cached`` keeps finished trials of an RDB storage
    in memory, as Optuna's own ``get_storage`` does, so a read of the study asks the database for
    new and unfinished trials only.
    """
    first = wait_s if open_wait_s is None else open_wait_s
    if proxy is not None:
        where = f"{spec} (through its proxy)"
        return resilient(_first_answer(proxy, first, where), wait_s, where, reconnect=proxy)
    kind = spec.storage_kind
    url = spec.url()
    opened = _first_answer(lambda: kind.open(url, connections, name), first, str(spec))
    backend = get_storage(opened.storage) if cached else opened.storage
    return resilient(backend, wait_s, str(spec), writes=opened.writes)


def _first_answer(opener: Callable[[], T], wait_s: float, where: str) -> T:
    """``opener()``, tried again while the storage cannot be reached, for up to ``wait_s``."""

    def attempt(first: bool) -> T:
        # The Redis journal and the heartbeat are marked experimental by Optuna; they are
        # chosen on purpose here, so their warnings would only alarm users at every start.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return opener()

    return with_retries(attempt, wait_s, where)


def open_for_command(
    spec: StorageSpec, wait_s: float = DEFAULT_WAIT_S, open_wait_s: float = COMMAND_WAIT_S
) -> ResilientStorage:
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
        if not spec.storage_kind.is_driver_error(err):
            raise
        # Refused for good: a wrong password, a database that does not exist.
        raise _unreachable(spec, err, "check the URL's user, password and database") from None


def _unreachable(spec: StorageSpec, cause: BaseException, advice: str) -> ConfigError:
    text = str(cause).strip()
    first_line = text.splitlines()[0] if text else type(cause).__name__
    return ConfigError(
        [Problem("optuna.storage", f"{spec} does not answer ({redact(first_line, spec.url())}); {advice}")]
    )


def connections_held(storage: BaseStorage) -> int:
    """The database connections ``storage`` holds open in this process now (0 without a database).

    Example:
        >>> import tempfile
        >>> connections_held(open_storage(StorageSpec("journal", tempfile.mkdtemp() + "/j.log")))
        0
    """
    backend = storage.backend if isinstance(storage, ResilientStorage) else storage
    engine = getattr(backend, "engine", None)
    if engine is None:
        return 0
    return int(engine.pool.checkedin() + engine.pool.checkedout())


def study_exists(storage: BaseStorage, name: str) -> bool:
    return any(s.study_name == name for s in storage.get_all_studies())

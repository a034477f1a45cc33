"""Where a study lives, as one wing: each storage kind is one class (:mod:`~._base`'s contract).

- :mod:`~._base`: :class:`StorageKind`, the registry, :class:`StorageSpec`;
- :mod:`~.journal`: the journal file (the default) and Redis;
- :mod:`~.rdb`: SQLite, PostgreSQL, MySQL/MariaDB; :mod:`~.rdb_writes`, a worker's RDB storage;
- :mod:`~.trial_writes`: how a trial's record rides with the trial's end;
- :mod:`~.resilient`: retries that wait out an outage; :mod:`~.opening`: resolving and opening;
- :mod:`~.capacity`: will the database take the workers; :mod:`~.proxy`: the workers' side of
  the storage proxy.
"""

from aimlutils.hyper_opt.storage import journal, rdb  # noqa: F401 - registers the built-in kinds
from aimlutils.hyper_opt.storage._base import (
    DatabaseRoom,
    Opened,
    StorageKind,
    StorageSpec,
    kinds,
    redact,
    register,
    titles,
)
from aimlutils.hyper_opt.storage.opening import (
    COMMAND_WAIT_S,
    DEFAULT_JOURNAL,
    DEFAULT_WAIT_S,
    connections_held,
    missing_driver,
    open_for_command,
    open_storage,
    parse_storage,
    study_exists,
)
from aimlutils.hyper_opt.storage.resilient import ResilientStorage, StorageUnavailable
from aimlutils.hyper_opt.storage.trial_writes import TrialWrites

__all__ = [
    "COMMAND_WAIT_S",
    "DEFAULT_JOURNAL",
    "DEFAULT_WAIT_S",
    "DatabaseRoom",
    "Opened",
    "ResilientStorage",
    "StorageKind",
    "StorageSpec",
    "StorageUnavailable",
    "TrialWrites",
    "connections_held",
    "kinds",
    "missing_driver",
    "open_for_command",
    "open_storage",
    "parse_storage",
    "redact",
    "register",
    "study_exists",
    "titles",
]

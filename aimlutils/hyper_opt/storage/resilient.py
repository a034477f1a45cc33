"""A storage that waits out outages: a restarting database, a proxy that died, a file server hiccup.

Every storage call that fails because the storage cannot be reached (not because the request is
wrong) is tried again with backoff, for up to ``limit_s`` seconds; the worker says so once in
its log, and once when the storage answers again. Only past the limit does the call raise
:class:`StorageUnavailable`, which a worker turns into a clean exit. A trial that finished during
the outage keeps its result in the worker's memory until its ``tell`` goes through.
"""

from __future__ import annotations

import errno
import logging
import random
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from aimlutils.hyper_opt._optuna import BaseHeartbeat
from aimlutils.hyper_opt.errors import ExitCode, HyperOptError
from aimlutils.hyper_opt.storage._base import kinds
from aimlutils.hyper_opt.storage.proxy import proxy_outage
from aimlutils.hyper_opt.storage.trial_writes import TrialWrites

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: errno values of a shared file system that is briefly unwell (NFS, Lustre).
_FILE_SYSTEM_ERRORS = {errno.EIO, errno.ESTALE, errno.ETIMEDOUT, errno.ENOLCK, errno.EAGAIN}
_BACKOFF_FIRST_S = 0.5
_BACKOFF_MAX_S = 15.0


class StorageUnavailable(HyperOptError, RuntimeError):
    """The storage did not answer within the limit."""

    exit_code = ExitCode.STORAGE_GONE


#: Messages of errors that waiting does not mend: a wrong password, a database that does not exist.
_NOT_OUTAGES = (
    "password authentication failed",
    "Access denied",
    "does not exist",
    "Unknown database",
    "no password supplied",
    "WRONGPASS",
    "NOAUTH",
)


#: One search per error: a worker's budget check meets a KeyError before every trial.
_NOT_OUTAGE = re.compile("|".join(re.escape(text) for text in _NOT_OUTAGES))


def is_outage(err: BaseException) -> bool:
    """Whether ``err`` says the storage could not be reached, rather than that a request was wrong:
    an error of Optuna's, the file system's or the network's that says so, or one that a storage
    kind (:meth:`~aimlutils.hyper_opt.storage._base.StorageKind.is_outage`) or the proxy
    recognises as its own."""
    if _NOT_OUTAGE.search(str(err)):
        return False
    if isinstance(err, StorageInternalError):
        return True
    if isinstance(err, OSError) and err.errno in _FILE_SYSTEM_ERRORS:
        return True
    if isinstance(err, ConnectionError):
        return True
    return proxy_outage(err) or any(kind.is_outage(err) for kind in kinds())


def with_retries(
    attempt: Callable[[bool], T],
    limit_s: float,
    where: str,
    before_retry: Callable[[], None] | None = None,
    failed: Exception | None = None,
) -> T:
    """``attempt(first)``, tried again with backoff while it fails with an outage (:func:`is_outage`).

    ``failed``: the outage a first attempt, made by the caller, already met; the next is a retry.

    Raises:
        StorageUnavailable: past ``limit_s`` seconds of outage.
    """
    started: float | None = None
    delay = _BACKOFF_FIRST_S
    while True:
        try:
            if failed is not None:
                err, failed = failed, None
                raise err
            result = attempt(started is None)
        except Exception as err:
            if not is_outage(err):
                raise
            now = time.monotonic()
            if started is None:
                started = now
                first_line = str(err).splitlines()[0] if str(err) else ""
                logger.warning(
                    "the storage %s does not answer (%s: %s); waiting up to %.0f s for it",
                    where,
                    type(err).__name__,
                    first_line,
                    limit_s,
                )
            if now - started >= limit_s:
                raise StorageUnavailable(
                    f"the storage {where} did not answer for {limit_s:.0f} s (optuna.storage_wait_s); "
                    f"last error: {type(err).__name__}: {err}"
                ) from err
            time.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter, not secrets
            delay = min(delay * 2, _BACKOFF_MAX_S)
            if before_retry is not None:
                before_retry()
            continue
        if started is not None:
            logger.warning("the storage %s answers again after %.0f s", where, time.monotonic() - started)
        return result


def _retrying(name: str) -> Callable[..., Any]:
    def method(self: ResilientStorage, *args: Any, **kwargs: Any) -> Any:
        # The usual case in one frame, without the retry loop's: a cheap trial makes dozens of calls.
        try:
            return getattr(self.backend, name)(*args, **kwargs)
        except Exception as err:
            if not is_outage(err):
                raise
            return self._retry(err, name, *args, **kwargs)

    method.__name__ = name
    method.__doc__ = f"``{name}`` of the wrapped storage, waiting out outages."
    return method


class ResilientStorage(BaseStorage, BaseHeartbeat):
    """Wraps a storage so that each call survives an outage of up to ``limit_s`` seconds.

    ``reconnect`` (optional) builds a fresh backend before a retry, for backends that must be
    re-pointed (a restarted proxy listens on a new address). ``writes``: how the storage's kind
    writes a trial's record with the trial's end (:mod:`~aimlutils.hyper_opt.storage.trial_writes`).
    """

    def __init__(
        self,
        backend: BaseStorage,
        limit_s: float,
        where: str,
        reconnect: Callable[[], BaseStorage] | None = None,
        writes: TrialWrites | None = None,
    ) -> None:
        self.backend, self.limit_s, self.where = backend, limit_s, where
        self.reconnect = reconnect
        self.writes = writes or TrialWrites()

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)``, a read or write of the storage's own, waiting out outages as the
        storage's calls do."""
        return with_retries(lambda _: function(*args), self.limit_s, self.where)

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__.copy()

    def _retry(self, outage: Exception, name: str, *args: Any, **kwargs: Any) -> Any:
        """``name(*args, **kwargs)`` once more and on, its first attempt having met ``outage``."""

        def attempt(first: bool) -> Any:
            try:
                return getattr(self.backend, name)(*args, **kwargs)
            except UpdateFinishedTrialError:
                if not first and name == "set_trial_state_values":
                    # The attempt that timed out had been stored: the trial is already finished.
                    return self._already_told(*args, **kwargs)
                raise

        return with_retries(attempt, self.limit_s, self.where, self._reconnect, failed=outage)

    def remove_session(self) -> None:
        self.backend.remove_session()

    def _reconnect(self) -> None:
        if self.reconnect is None:
            return
        try:
            self.backend = self.reconnect()
        except Exception as err:
            logger.debug("reconnecting to %s failed: %s", self.where, err)

    def _already_told(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        return self.backend.get_trial(trial_id).state == state

    # Heartbeats, for RDB storages: ``record_heartbeat`` and ``_get_stale_trial_ids`` are retried
    # as every storage call is (below).

    def get_heartbeat_interval(self) -> int | None:
        backend = self.backend
        return backend.get_heartbeat_interval() if isinstance(backend, BaseHeartbeat) else None

    def get_heartbeat_stale_trial_callback(self) -> Any:
        backend = self.backend
        return backend.get_heartbeat_stale_trial_callback() if isinstance(backend, BaseHeartbeat) else None


_PASSED_THROUGH = ("remove_session",)  # called after each request by Optuna; nothing to retry
RETRIED_METHODS: tuple[str, ...] = (
    *(
        n
        for n in dir(BaseStorage)
        if not n.startswith("_") and callable(getattr(BaseStorage, n)) and n not in _PASSED_THROUGH
    ),
    "record_heartbeat",
    "_get_stale_trial_ids",
)
"""The storage calls a :class:`ResilientStorage` retries, each through a ``_retrying`` method."""
for _name in RETRIED_METHODS:
    setattr(ResilientStorage, _name, _retrying(_name))
ResilientStorage.__abstractmethods__ = frozenset()


def resilient(backend: BaseStorage, limit_s: float, where: str, **options: Any) -> ResilientStorage:
    """``backend`` behind a :class:`ResilientStorage` (``options``: its ``reconnect``, ``writes``)."""
    # The storage methods are set on the class above, which type checkers cannot see.
    return ResilientStorage(backend, limit_s, where, **options)  # type: ignore[abstract]

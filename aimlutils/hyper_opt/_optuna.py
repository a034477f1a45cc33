"""Every private Optuna name the package uses, in one place, each with why.

Optuna keeps these out of its public API, so a release may move or change them. Each is reached
through this module only, and ``tests/test_optuna_internals.py`` checks every one against the
installed Optuna, saying which name moved: an upgrade then fails one test that names the break,
not a worker in the middle of a study. ``setup.cfg`` allows the Optuna releases the suite has run
against.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import optuna

# Optuna's own heartbeat thread, as ``study.optimize`` runs it around a trial: the worker asks and
# tells itself (one claim lock's whole life in one function) and runs the same thread.
from optuna.storages._heartbeat import BaseHeartbeat, get_heartbeat_thread, is_heartbeat_enabled

# The base class a journal file's lock must have; the package's lock is a POSIX record lock.
from optuna.storages.journal._file import BaseJournalFileLock
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

__all__ = [
    "BaseHeartbeat",
    "BaseJournalFileLock",
    "frozen_copy",
    "get_heartbeat_thread",
    "grpc_proxy_client",
    "grpc_proxy_server",
    "is_heartbeat_enabled",
    "rdb_tables",
    "set_user_attr_without_commit",
    "study_storage",
    "tell",
    "trial_id",
]


def tell(
    study: optuna.Study,
    trial: optuna.Trial | int,
    values: float | Sequence[float] | None,
    state: TrialState | None,
) -> tuple[TrialState, list[float] | None]:
    """``study.tell`` as ``study.optimize`` does it: the told state and values, without the deep
    copy of the finished trial ``study.tell`` returns (a tenth of a cheap trial's time).

    Raises ``ValueError`` for a trial that is no longer RUNNING, as ``study.tell`` does.
    """
    from optuna.study._tell import _tell_with_warning

    told_state, told_values, _ = _tell_with_warning(study, trial, values, state)
    return told_state, told_values


def trial_id(trial: optuna.Trial) -> int:
    """The storage's id of ``trial`` (public lookups go through the number: a storage read)."""
    return int(trial._trial_id)


def frozen_copy(trial: optuna.Trial) -> FrozenTrial:
    """The worker's own copy of a running trial, which Optuna keeps up to date as the trial
    suggests, reports and sets attributes: what a told trial's CSV row is made from without a
    read of the trial and its five tables."""
    cached: FrozenTrial = trial._cached_frozen_trial
    return cached


def study_storage(study: optuna.Study) -> BaseStorage:
    """The storage a study was loaded with (Optuna keeps no public handle on it)."""
    storage: BaseStorage = study._storage
    return storage


def rdb_tables() -> types.SimpleNamespace:
    """The RDB storage's tables (SQLAlchemy), for the worker's statements written as Core.

    Imported on use: the models load SQLAlchemy, which a journal-file study never needs.
    """
    from optuna.storages._rdb import models

    return types.SimpleNamespace(
        trials=models.TrialModel.__table__,
        heartbeats=models.TrialHeartbeatModel.__table__,
        user_attrs=models.TrialUserAttributeModel.__table__,
        user_attr_model=models.TrialUserAttributeModel,
    )


def set_user_attr_without_commit(storage: Any, session: Any, trial_id: int, key: str, value: Any) -> None:
    """Optuna's upsert of a trial's user attribute in an open RDB session, left for the caller to
    commit: a record that must replace one already stored rides in the tell's transaction."""
    storage._set_trial_attr_without_commit(session, rdb_tables().user_attr_model, trial_id, key, value)


def grpc_proxy_client(host: str, port: int, interceptor: Any) -> optuna.storages.GrpcStorageProxy:
    """Optuna's gRPC proxy client whose every call goes through ``interceptor`` (a
    ``grpc.UnaryUnaryClientInterceptor``: the package's adds the study's token).

    ``GrpcStorageProxy`` takes no credentials: it opens an insecure channel in ``_setup`` (again
    after unpickling) and keeps the channel, its stub and a cache of trials on ``_channel``,
    ``_stub`` and ``_cache``. This client makes the same three on a channel through the
    interceptor; everything else (the protocol, the cache) is Optuna's.
    """
    import grpc
    from optuna.storages._grpc.auto_generated import api_pb2_grpc
    from optuna.storages._grpc.client import GrpcClientCache, create_insecure_channel

    class InterceptedProxy(optuna.storages.GrpcStorageProxy):
        def _setup(self) -> None:
            self._channel = grpc.intercept_channel(
                create_insecure_channel(self._host, self._port), interceptor
            )
            self._stub = api_pb2_grpc.StorageServiceStub(self._channel)
            self._cache = GrpcClientCache(self._stub)

    return InterceptedProxy(host=host, port=port)


def grpc_proxy_server(storage: BaseStorage, address: str, interceptor: Any, threads: int = 10) -> Any:
    """Optuna's gRPC proxy server (not started) on ``address``, every call through ``interceptor``
    (a ``grpc.ServerInterceptor``: the package's checks the study's token).

    ``run_grpc_proxy_server`` takes no interceptor; this builds the server as it does, from
    Optuna's servicer and generated registration function, with one. Raises ``RuntimeError`` when
    ``address`` cannot be bound.
    """
    from concurrent.futures import ThreadPoolExecutor

    import grpc
    from optuna.storages._grpc.auto_generated import api_pb2_grpc
    from optuna.storages._grpc.servicer import OptunaStorageProxyService

    server = grpc.server(ThreadPoolExecutor(max_workers=threads), interceptors=[interceptor])
    api_pb2_grpc.add_StorageServiceServicer_to_server(OptunaStorageProxyService(storage), server)
    server.add_insecure_port(address)
    return server

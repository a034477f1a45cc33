"""The study's storage proxy: Optuna's gRPC proxy in front of PostgreSQL or MySQL.

With ``optuna.proxy`` the workers talk to one proxy process, which alone holds database
connections (``optuna.proxy.connections``), so a study of thousands of workers costs the
database a handful. Locally ``optimize.py`` starts the proxy and stops it; on a cluster it is a
small CPU job submitted with the workers. Either way it writes its address to
``save_path/proxy.json``, where workers read it, and it ends once the study is done.

Workers wait for a proxy that is not there yet, or died, for up to ``optuna.storage_wait_s``,
reading the address again each time: ``optimize.py --reload`` (or, locally, ``optimize.py``
itself) starts a new proxy, and they carry on with it.

This module is the workers' side (the address, a client); the proxy process itself is
:mod:`aimlutils.hyper_opt.launchers.proxy_server`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage

from aimlutils.hyper_opt.paths import StudyPaths

if TYPE_CHECKING:
    from optuna.storages import GrpcStorageProxy

# Named, not __name__: run with -m, this module is __main__, outside the package's logger.
logger = logging.getLogger("aimlutils.hyper_opt.storage.proxy")

#: How long one attempt to reach a proxy waits for it to answer.
ANSWER_TIMEOUT_S = 10.0


@dataclasses.dataclass(frozen=True)
class ProxyAddress:
    """Where a study's proxy listens, and which process (or job) it is."""

    host: str
    port: int
    pid: int
    node: str
    job_id: str | None = None
    started: str = ""

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self)))
        tmp.replace(path)

    @classmethod
    def read(cls, path: Path) -> ProxyAddress | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def __str__(self) -> str:
        job = f", job {self.job_id}" if self.job_id else ""
        return f"{self.host}:{self.port} (pid {self.pid} on {self.node}{job})"


def _client(address: ProxyAddress) -> GrpcStorageProxy:
    from optuna.storages import GrpcStorageProxy

    with warnings.catch_warnings():  # experimental in Optuna; chosen on purpose here
        warnings.simplefilter("ignore", ExperimentalWarning)
        return GrpcStorageProxy(host=address.host, port=address.port)


def answers(address: ProxyAddress, timeout: float = ANSWER_TIMEOUT_S) -> bool:
    """Whether a proxy answers at ``address`` within ``timeout`` seconds."""
    client = _client(address)
    try:
        client.wait_server_ready(timeout=timeout)
    except ConnectionError:
        return False
    finally:
        client.close()
    return True


def client_opener(paths: StudyPaths) -> Callable[[], BaseStorage]:
    """Opens a client of the proxy named in ``save_path/proxy.json``.

    Raises :class:`ConnectionError` (which the storage's retries wait out) while no proxy answers.
    """

    def open_client() -> BaseStorage:
        address = ProxyAddress.read(paths.proxy_address)
        if address is None:
            raise ConnectionError(f"no storage proxy yet: {paths.proxy_address} does not exist")
        client = _client(address)
        try:
            client.wait_server_ready(timeout=ANSWER_TIMEOUT_S)
        except ConnectionError as err:
            client.close()
            raise ConnectionError(f"the storage proxy at {address} does not answer") from err
        return client

    return open_client


def proxy_outage(err: BaseException) -> bool:
    """Whether ``err`` is the proxy's client saying the proxy cannot be reached now (it restarts)."""
    grpc = sys.modules.get("grpc")  # not loaded: not a gRPC error
    if grpc is None or not isinstance(err, grpc.RpcError):
        return False
    code = getattr(err, "code", lambda: None)()
    return getattr(code, "name", "") in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED")

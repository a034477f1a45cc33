"""The study's storage proxy: Optuna's gRPC proxy in front of PostgreSQL or MySQL.

With ``optuna.proxy`` the workers talk to one proxy process, which alone holds database
connections (``optuna.proxy.connections``), so a study of thousands of workers costs the
database a handful. Locally ``optimize.py`` starts the proxy and stops it; on a cluster it is a
small CPU job submitted with the workers. Either way it writes its address to
``save_path/proxy.json``, where workers read it, and it ends once the study is done.

Workers wait for a proxy that is not there yet, or died, for up to ``optuna.storage_wait_s``,
reading the address again each time: ``optimize.py --reload`` (or, locally, ``optimize.py``
itself) starts a new proxy, and they carry on with it.

The proxy answers only calls that carry the study's token: a secret made with the study, kept in
``save_path/.proxy_token`` (mode 0600; ``AIMLUTILS_PROXY_TOKEN`` in the environment, where set,
comes first). Optuna's proxy protocol has no credentials, so the token rides in each call's
metadata (``authorization: Bearer <token>``), added by this module's client, an interceptor
around Optuna's own; anything else, Optuna's plain ``GrpcStorageProxy`` included, is refused with
``UNAUTHENTICATED`` before it reaches the storage. The token keeps other users of the machines
out; it is sent in clear, so it does not guard against someone who can read the network (root).

This module is the workers' side (the address, a client); the proxy process itself is
:mod:`aimlutils.hyper_opt.launchers.proxy_server`.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging
import os
import secrets
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage

from aimlutils.hyper_opt import _optuna
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


#: Where a worker's environment may give the proxy's token instead of ``save_path/.proxy_token``.
TOKEN_ENV = "AIMLUTILS_PROXY_TOKEN"  # noqa: S105 - a variable's name
_METADATA_KEY = "authorization"


def study_token(paths: StudyPaths, make: bool = False) -> str:
    """The study's proxy token: from ``AIMLUTILS_PROXY_TOKEN``, else ``save_path/.proxy_token``
    (made, readable by its owner alone, when ``make`` and missing).

    Raises:
        PermissionError: no token to be found (the proxy makes it when it first starts).
    """
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    path = paths.proxy_token
    if make and not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another proxy made it first
        else:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(32))
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if not token:
        raise PermissionError(f"no token for the storage proxy in {path} (nor in {TOKEN_ENV})")
    return token


def _bearer(token: str) -> str:
    return f"Bearer {token}"


def _interceptor(token: str) -> object:
    import grpc

    class WithToken(grpc.UnaryUnaryClientInterceptor):
        """Adds the study's token to each call's metadata."""

        def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            metadata = [*(details.metadata or ()), (_METADATA_KEY, _bearer(token))]
            return continuation(details._replace(metadata=metadata), request)

    return WithToken()


class TokenCheck:
    """The proxy's side: a ``grpc.ServerInterceptor`` that lets through only calls that carry the
    study's token, refusing the others with ``UNAUTHENTICATED`` (the first one logged)."""

    def __init__(self, token: str) -> None:
        self._expected = _bearer(token).encode()
        #: Calls refused so far.
        self.refused = 0

    def server_interceptor(self) -> object:
        import grpc

        check = self

        def refuse(request: Any, context: Any) -> Any:
            check.refused += 1
            if check.refused == 1:
                logger.warning(
                    "refused a call from %s without the study's token; later refusals are counted, "
                    "not logged",
                    context.peer(),
                )
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "this storage proxy needs the study's token")

        refusal = grpc.unary_unary_rpc_method_handler(refuse)

        class Check(grpc.ServerInterceptor):
            def intercept_service(self, continuation: Any, details: Any) -> Any:
                given = dict(details.invocation_metadata or ()).get(_METADATA_KEY, "")
                if isinstance(given, str) and hmac.compare_digest(given.encode(), check._expected):
                    return continuation(details)
                return refusal

        return Check()


def _client(address: ProxyAddress, token: str) -> GrpcStorageProxy:
    with warnings.catch_warnings():  # experimental in Optuna; chosen on purpose here
        warnings.simplefilter("ignore", ExperimentalWarning)
        return _optuna.grpc_proxy_client(address.host, address.port, _interceptor(token))


def answers(address: ProxyAddress, timeout: float = ANSWER_TIMEOUT_S) -> bool:
    """Whether a proxy answers at ``address`` within ``timeout`` seconds."""
    client = _client(address, "")  # readiness is the channel's; it asks nothing of the proxy
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
        try:
            token = study_token(paths)
        except PermissionError as err:
            raise ConnectionError(str(err)) from err
        client = _client(address, token)
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

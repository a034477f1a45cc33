"""Will the database take the workers? Checked before anything is submitted.

Each worker holds one connection to PostgreSQL or MySQL (its heartbeat shares it); a server
allows ``max_connections`` and some are in use. Past that, a new connection fails ("sorry, too
many clients already"), so a study that does not fit is refused with the numbers.
"""

from __future__ import annotations

from aimlutils.hyper_opt.storage._base import DatabaseRoom, StorageSpec

#: Connections of ``optimize.py`` itself while it runs local workers (progress, recovery).
OWN_CONNECTIONS = 2


def database_room(spec: StorageSpec, held_here: int = 0) -> DatabaseRoom | None:
    """The connection room of ``spec``'s server; ``None`` for storages without connections.

    ``held_here``: connections this process holds open already (its own storage's pool), which
    the server counts as in use but which are this process's, not others'.
    """
    return spec.storage_kind.room(spec.url(), held_here)


def connection_problem(
    spec: StorageSpec, connections: int, proxy: bool, local: bool, held_here: int = 0
) -> str | None:
    """Why ``connections`` more database connections do not fit ``spec``'s server, or ``None``.

    ``connections`` is one per worker, or the proxy's pool with ``proxy``; ``local`` adds those
    of ``optimize.py``, which stays to watch local workers. ``held_here``: connections this
    process has open already, not counted as others' (see :func:`database_room`).
    """
    room = database_room(spec, held_here)
    if room is None:
        return None
    needed = connections + (OWN_CONNECTIONS if local else 0)
    if needed <= room.free:
        return None
    fit = max(0, room.free - (OWN_CONNECTIONS if local else 0))
    reserved = f", {room.reserved} reserved for superusers" if room.reserved else ""
    head = (
        f"optuna.storage: {spec} allows {room.max_connections} connections ({room.in_use} in use{reserved}): "
        f"room for {room.free}"
    )
    if proxy:
        return f"{head}, but the proxy needs {needed}; lower optuna.proxy.connections to at most {fit}"
    return (
        f"{head}, but {connections} workers need one each"
        + (f" and optimize.py {OWN_CONNECTIONS}" if local else "")
        + f". Start at most {fit} workers (--workers, or fewer jobs), put the storage proxy in front of the "
        "database (optuna.proxy: true; the workers then hold no connection), or use the journal file "
        "(leave out optuna.storage)"
    )

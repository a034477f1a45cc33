"""Database storages: SQLite, PostgreSQL and MySQL/MariaDB, through Optuna's RDB storage.

Each worker holds one connection (its heartbeat thread shares it): with hundreds of workers,
connections are what a database runs out of first (PostgreSQL allows 100 by default), so
PostgreSQL and MySQL report their room (:meth:`StorageKind.room`) for the check made before
anything is submitted. A worker's own writes ride with Optuna's (:class:`WorkerRDBStorage`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from optuna.storages import RetryHeartbeatStaleTrialCallback

from aimlutils.hyper_opt.storage._base import DatabaseRoom, Opened, StorageKind, register
from aimlutils.hyper_opt.storage.rdb_writes import RDBTrialWrites, WorkerRDBStorage

# A worker whose heartbeat is older than the grace period is dead: its RUNNING trial is failed
# and retried once. Long enough for a slow shared file system or a busy database.
HEARTBEAT_INTERVAL_S = 60
GRACE_PERIOD_S = 180
SQLITE_BUSY_TIMEOUT_S = 120
#: How long a worker's thread waits for its one database connection while the other thread has it.
POOL_TIMEOUT_S = 300


def _sqlalchemy_error(err: BaseException, *names: str) -> bool:
    exc = sys.modules.get("sqlalchemy.exc")  # not loaded: not a SQLAlchemy error
    return exc is not None and isinstance(err, tuple(getattr(exc, n) for n in names))


class _Database(StorageKind):
    """What the three database kinds share: Optuna's RDB storage with a heartbeat."""

    def is_outage(self, err: BaseException) -> bool:
        return _sqlalchemy_error(err, "OperationalError", "InterfaceError")

    def is_driver_error(self, err: BaseException) -> bool:
        return _sqlalchemy_error(err, "SQLAlchemyError")

    def engine_kwargs(self, connections: int, name: str) -> dict[str, Any]:
        return {
            "pool_pre_ping": True,
            "pool_size": connections,
            "max_overflow": 0,
            "pool_timeout": POOL_TIMEOUT_S,
        }

    def open(self, location: str, connections: int, name: str) -> Opened:
        storage = WorkerRDBStorage(
            location,
            engine_kwargs=self.engine_kwargs(connections, name),
            # Optuna's schema check nests a second connection, which one connection cannot give;
            # optimize.py, which opens the storage with two before any worker starts, makes it.
            skip_compatibility_check=connections < 2,
            heartbeat_interval=HEARTBEAT_INTERVAL_S,
            grace_period=GRACE_PERIOD_S,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
        )
        return Opened(storage, RDBTrialWrites(storage))


@register
class SQLite(_Database):
    """A SQLite file: one machine's workers; many at once wait on its single writer."""

    name, title = "sqlite", "SQLite"
    schemes = ("sqlite",)
    many_workers_warning = (
        "SQLite locks badly under many writers and is unsafe on network file systems; prefer the "
        "default journal file, PostgreSQL or MySQL for parallel studies."
    )

    def location(self, scheme: str, rest: str, base_dir: Path) -> str:
        if not rest.startswith("/") or rest == "/":
            raise ValueError(
                "a SQLite URL needs a file: sqlite:///relative/path.db or sqlite:////abs/path.db"
            )
        # Workers may start in another directory, so the path is made absolute here.
        return f"sqlite:///{(base_dir / rest[1:]).resolve()}"

    def engine_kwargs(self, connections: int, name: str) -> dict[str, Any]:
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}

    def open(self, location: str, connections: int, name: str) -> Opened:
        Path(location.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return super().open(location, connections, name)

    def exists(self, location: str) -> bool:
        return Path(location.removeprefix("sqlite:///")).exists()


class _Server(_Database):
    """A database server, reached by URL with a driver the package's extras install."""

    holds_connections = True
    proxy_can_front = True

    def location(self, scheme: str, rest: str, base_dir: Path) -> str:
        if "+" in scheme:
            return f"{scheme}://{rest}"
        # Name the driver the extras install: SQLAlchemy's default MySQL driver needs a C build,
        # and its default PostgreSQL driver changed between releases.
        return f"{self.schemes[0]}+{self._driver_module()}://{rest}"

    def _driver_module(self) -> str:
        return self.driver[0] if self.driver else ""

    def missing_driver(self, location: str) -> str | None:
        if not location.split("://", 1)[0].endswith("+" + self._driver_module()):
            return None  # the user picked another driver; SQLAlchemy names it if it is missing
        return super().missing_driver(location)

    def room(self, location: str, held_here: int = 0) -> DatabaseRoom | None:
        import sqlalchemy

        engine = sqlalchemy.create_engine(location, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as conn:
                # This check's own connection closes before any worker starts.
                return self._room(conn, held_here + 1)
        finally:
            engine.dispose()

    def _room(self, conn: Any, not_others: int) -> DatabaseRoom:
        raise NotImplementedError


@register
class PostgreSQL(_Server):
    name, title = "postgresql", "PostgreSQL"
    schemes, driver = ("postgresql", "postgres"), ("psycopg", "postgres")
    # libpq reads it too; named so that batch jobs are handed it.
    password_env = "PGPASSWORD"  # noqa: S105 - a variable's name

    def engine_kwargs(self, connections: int, name: str) -> dict[str, Any]:
        # Shown in pg_stat_activity, so a DBA sees whose connections these are.
        return {**super().engine_kwargs(connections, name), "connect_args": {"application_name": name[:63]}}

    def _room(self, conn: Any, not_others: int) -> DatabaseRoom:
        limit = int(conn.exec_driver_sql("SHOW max_connections").scalar_one())
        reserved = int(conn.exec_driver_sql("SHOW superuser_reserved_connections").scalar_one())
        superuser = conn.exec_driver_sql("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        is_super = bool(superuser.scalar_one_or_none())
        in_use = int(
            conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
            ).scalar_one()
        )
        return DatabaseRoom(limit, in_use - not_others, 0 if is_super else reserved)


@register
class MySQL(_Server):
    name, title = "mysql", "MySQL"
    schemes, driver = ("mysql", "mariadb"), ("pymysql", "mysql")
    # What the mysql client reads; PyMySQL does not.
    password_env = "MYSQL_PWD"  # noqa: S105 - a variable's name

    def _room(self, conn: Any, not_others: int) -> DatabaseRoom:
        limit = int(conn.exec_driver_sql("SELECT @@max_connections").scalar_one())
        in_use = int(conn.exec_driver_sql("SELECT COUNT(*) FROM information_schema.processlist").scalar_one())
        return DatabaseRoom(limit, in_use - not_others)

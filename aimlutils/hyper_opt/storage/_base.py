"""A storage kind's contract, and the registry that finds a kind by its URL scheme.

A kind (journal file, SQLite, PostgreSQL, MySQL/MariaDB, Redis) is one :class:`StorageKind`
subclass. It owns everything that differs between kinds: the URL schemes it answers, the driver
it needs, how it opens with a given number of connections, which of its errors mean "the storage
cannot be reached now" (an outage, waited out) rather than "the request is wrong", how many
connections its server has room for, whether the storage proxy can front it, and how a trial's
record rides with the trial's finishing write. Nothing outside this wing asks which kind a
storage is; it asks the kind.

A subclass provides ``name``, ``schemes`` and :meth:`open`; every other member has a default
that suits a storage with no connections to count, no outage errors of its own and one write per
record. It may assume that:

- :meth:`location` gets the text after ``scheme://`` (or a plain path for :attr:`paths` kinds);
- :meth:`open` is called in each process that uses the study, once per storage it opens, and
  the storage it returns is wrapped by :class:`~aimlutils.hyper_opt.storage.resilient.ResilientStorage`,
  which retries any call that fails with an error :meth:`is_outage` (or the generic checks) accepts;
- a kind is stateless: one instance serves every study.

A kind is registered with :func:`register` (a class decorator), after which ``optuna.storage:
<scheme>://...`` reaches it. ``tests/test_storage_kinds.py`` defines one in the test file and runs a
study through the worker path.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib.util
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, TypeVar

from optuna.storages import BaseStorage

from aimlutils.hyper_opt.storage import secrets

if TYPE_CHECKING:
    from aimlutils.hyper_opt.storage.trial_writes import TrialWrites


@dataclasses.dataclass(frozen=True)
class DatabaseRoom:
    """A database server's connection limit and what is in use now."""

    max_connections: int
    in_use: int
    reserved: int = 0
    """Slots kept for superusers, which this user cannot take."""

    @property
    def free(self) -> int:
        return max(0, self.max_connections - self.reserved - self.in_use)


@dataclasses.dataclass(frozen=True)
class Opened:
    """What :meth:`StorageKind.open` gives: the Optuna storage, and how a trial's record rides."""

    storage: BaseStorage
    writes: TrialWrites | None = None
    """``None``: the record is a write of its own (:class:`~.trial_writes.TrialWrites`)."""


class StorageKind(abc.ABC):
    """One kind of storage. See the module's docstring for the contract."""

    #: The kind's name, as ``StorageSpec.kind`` gives it ("postgresql").
    name: ClassVar[str]
    #: The kind's name in messages ("PostgreSQL").
    title: ClassVar[str] = ""
    #: URL schemes (before any ``+driver``) that mean this kind.
    schemes: ClassVar[tuple[str, ...]] = ()
    #: ``(module, extra)``: the driver module the kind needs and the package extra that installs it.
    driver: ClassVar[tuple[str, str] | None] = None
    #: Whether each worker holds connections to a server with a limit (see :meth:`room`).
    holds_connections: ClassVar[bool] = False
    #: Whether the storage proxy (Optuna's gRPC proxy) can front it.
    proxy_can_front: ClassVar[bool] = False
    #: Whether the kind is a plain file path (the journal file); ``optuna.storage`` without ``://``.
    paths: ClassVar[bool] = False
    #: What a user should know before running several workers on it, or ``None``.
    many_workers_warning: ClassVar[str | None] = None
    #: The environment variable the kind's own clients read a password from, where its driver
    #: does not read it itself (libpq reads ``PGPASSWORD``): used when the URL has no password.
    password_env: ClassVar[str | None] = None

    def location(self, scheme: str, rest: str, base_dir: Path) -> str:
        """The location ``open`` takes, from ``scheme://rest`` (relative paths against ``base_dir``).

        Raises:
            ValueError: saying which forms are allowed.
        """
        return f"{scheme}://{rest}"

    @abc.abstractmethod
    def open(self, location: str, connections: int, name: str) -> Opened:
        """Open the storage at ``location``, holding at most ``connections`` connections; ``name``
        says whose connections they are, where the server shows it."""

    def is_outage(self, err: BaseException) -> bool:
        """Whether ``err``, raised by this kind's driver, means the storage cannot be reached now."""
        return False

    def is_driver_error(self, err: BaseException) -> bool:
        """Whether ``err`` comes from the kind's driver: when opening, a refusal for good (a wrong
        password, a database that does not exist), reported as a config error."""
        return False

    def room(self, location: str, held_here: int = 0) -> DatabaseRoom | None:
        """The connection room of the server at ``location``; ``None`` for kinds without a limit.

        ``held_here``: connections this process holds already, counted by the server as in use.
        """
        return None

    def exists(self, location: str) -> bool:
        """Whether a study could already be stored there (a file kind's file exists)."""
        return True

    def missing_driver(self, location: str) -> str | None:
        """A message naming the package to install when the kind's driver is missing."""
        if self.driver is None:
            return None
        module, extra = self.driver
        if importlib.util.find_spec(module) is None:
            return f"{self.name} storage needs the {module} package: pip install 'aimlutils[{extra}]'"
        return None


_KINDS: dict[str, StorageKind] = {}
K = TypeVar("K", bound=type[StorageKind])


def register(kind: K) -> K:
    """Make ``kind`` (a :class:`StorageKind` subclass) reachable by its name and URL schemes."""
    instance = kind()
    for other in _KINDS.values():
        taken = set(other.schemes) & set(instance.schemes)
        if taken and other.name != instance.name:
            raise ValueError(
                f"storage kind {kind.name!r}: scheme(s) {sorted(taken)} belong to {other.name!r}"
            )
    _KINDS[instance.name] = instance
    return kind


def kinds() -> Iterator[StorageKind]:
    """Every registered kind."""
    return iter(list(_KINDS.values()))


def kind_named(name: str) -> StorageKind:
    """The registered kind called ``name``.

    Raises:
        KeyError: no such kind.
    """
    return _KINDS[name]


def kind_of_scheme(scheme: str) -> StorageKind | None:
    """The kind whose schemes include ``scheme`` (without its ``+driver``), or ``None``."""
    base = scheme.split("+", 1)[0].lower()
    return next((k for k in _KINDS.values() if base in k.schemes), None)


def path_kind() -> StorageKind:
    """The kind a plain file path means (the journal file)."""
    return next(k for k in _KINDS.values() if k.paths)


def titles(kinds_: list[StorageKind]) -> str:
    """``"A, B or C"`` of the kinds' titles."""
    names = [k.title or k.name for k in kinds_]
    return ", ".join(names[:-1]) + (" or " if len(names) > 1 else "") + names[-1] if names else "(none)"


def allowed_forms() -> str:
    """The storage forms a message lists as allowed."""
    forms = ["a journal file path"] + [f"{k.schemes[0]}://" for k in _KINDS.values() if k.schemes]
    return ", ".join(forms)


#: A URL's password: after ``user:`` (the user may be empty, as in ``redis://:pw@host``), or as
#: a ``password=`` query parameter (``postgresql://u@h/db?password=pw``).
_URL_PASSWORD = re.compile(r"(//[^:/@\s]*:)([^@/\s]*)@|([?&]password=)([^&\s]*)", re.IGNORECASE)
_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")


def redact(text: str, url: str | None = None) -> str:
    """Hide the passwords of URLs in ``text`` (a URL, or a driver's message that quotes one), and
    the password of ``url`` wherever ``text`` has it, for messages and logs. A ``${NAME}``
    reference to the environment is no secret and stays.

    Every form a user can write:

        >>> for url in (
        ...     "redis://:pw@h",
        ...     "redis://user:pw@h:6379/0",
        ...     "postgresql://u:pw@h/db",
        ...     "postgresql://u@h/db?password=pw",
        ...     "postgresql://u@h/db?sslmode=require&password=pw",
        ...     "mysql+pymysql://root:pw@h/db",
        ...     "postgresql://u:${DB_PASSWORD}@h/db",
        ...     "postgresql://u@h/db",
        ... ):
        ...     print(f"{url:<50} {redact(url)}")
        redis://:pw@h                                      redis://:***@h
        redis://user:pw@h:6379/0                           redis://user:***@h:6379/0
        postgresql://u:pw@h/db                             postgresql://u:***@h/db
        postgresql://u@h/db?password=pw                    postgresql://u@h/db?password=***
        postgresql://u@h/db?sslmode=require&password=pw    postgresql://u@h/db?sslmode=require&password=***
        mysql+pymysql://root:pw@h/db                       mysql+pymysql://root:***@h/db
        postgresql://u:${DB_PASSWORD}@h/db                 postgresql://u:${DB_PASSWORD}@h/db
        postgresql://u@h/db                                postgresql://u@h/db

    A driver's message that quotes the password without its URL:

        >>> redact("AUTH failed for 'hunter2'", "redis://:hunter2@host")
        "AUTH failed for '***'"
    """

    def mask(match: re.Match[str]) -> str:
        prefix, secret, suffix = (
            (match.group(1), match.group(2), "@") if match.group(1) else (match.group(3), match.group(4), "")
        )
        return f"{prefix}{secret if _REFERENCE.fullmatch(secret) else '***'}{suffix}"

    masked = _URL_PASSWORD.sub(mask, text)
    for secret in _passwords(url) if url else ():
        masked = masked.replace(secret, "***")
    return masked


def _passwords(url: str) -> list[str]:
    """The password a URL holds (its user's, or a ``password=`` parameter's), at least 3 characters."""
    found = secrets.inline_password(url)
    return [found] if found and len(found) >= 3 else []


@dataclasses.dataclass(frozen=True)
class StorageSpec:
    """A resolved storage location: its kind's name and what the kind opens.

    ``location`` is the form the package writes down: a password in it is a ``${NAME}`` reference
    to the environment (:mod:`~.secrets`). ``secret`` is a password the user wrote inline, which
    this process hands to the processes it starts through :meth:`environment`.
    """

    kind: str
    location: str
    secret: str | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def storage_kind(self) -> StorageKind:
        return kind_named(self.kind)

    def environment(self) -> dict[str, str]:
        """What the processes this one starts need in their environment to open the storage."""
        return {secrets.PASSWORD_ENV: self.secret} if self.secret is not None else {}

    def variables(self, environ: Mapping[str, str] | None = None) -> list[str]:
        """The environment variables a process needs to open the storage, as far as they are set
        here: those the URL names, and the kind's password variable when the URL has no password."""
        environ = {**(os.environ if environ is None else environ), **self.environment()}
        names = secrets.references(self.location)
        variable = self.storage_kind.password_env
        if variable and variable in environ and secrets.password(self.location) is None:
            names.append(variable)
        return [name for name in dict.fromkeys(names) if name in environ]

    def url(self, environ: Mapping[str, str] | None = None) -> str:
        """The location to open, with its ``${NAME}`` references expanded (kept in memory only).

        Raises:
            secrets.MissingVariable: a variable the URL names is not set.
        """
        environ = {**(os.environ if environ is None else environ), **self.environment()}
        url = secrets.expand(self.location, environ)
        variable = self.storage_kind.password_env
        if variable and environ.get(variable) and secrets.password(url) is None:
            url = secrets.with_password(url, environ[variable])
        return url

    def __str__(self) -> str:
        return redact(self.location)

"""A storage URL's password: given without writing it down, and never written down by the package.

A user gives the password of ``optuna.storage`` in one of these ways, safest first:

- the driver's own: PostgreSQL's ``~/.pgpass`` (mode 0600) or ``PGPASSWORD``, which libpq reads
  itself; for MySQL/MariaDB ``MYSQL_PWD`` and for Redis ``REDISCLI_AUTH``, which the package reads
  when the URL has no password (:attr:`~._base.StorageKind.password_env`);
- a reference to the environment in the URL: ``postgresql://me:${DB_PASSWORD}@host/db``;
- inline, ``postgresql://me:secret@host/db``: it works, and ``optimize.py`` says once that the
  ways above are safer. The package then writes the URL with ``${AIMLUTILS_STORAGE_PASSWORD}``
  in its place and hands the password to its workers (local processes, batch jobs, the storage
  proxy) in that variable of their environment, which only their user (and root) can read.

Everywhere the URL is written (``save_path/configs/hyper.yml``, the ``conf`` of ``train``, the
reproduction records, job scripts) it is the unexpanded form; the expanded URL exists in memory
only, when a storage is opened.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from aimlutils.hyper_opt.errors import HyperOptError

#: The variable that carries a password written inline in ``hyper.yml`` to the workers.
PASSWORD_ENV = "AIMLUTILS_STORAGE_PASSWORD"  # noqa: S105 - a variable's name

_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: ``scheme://[user]:password@`` (group 2), or ``?password=`` / ``&password=`` (group 4).
_PASSWORD = re.compile(
    r"(^[A-Za-z0-9+.\-]+://[^:/@\s]*:)([^@/\s]*)(@)|([?&]password=)([^&\s]*)", re.IGNORECASE
)


class MissingVariable(HyperOptError, ValueError):
    """The URL names an environment variable that is not set."""


def references(url: str) -> list[str]:
    """The environment variables ``url`` names as ``${NAME}``.

    Example:
        >>> references("postgresql://me:${DB_PASSWORD}@host/${DB_NAME}")
        ['DB_PASSWORD', 'DB_NAME']
    """
    return _REFERENCE.findall(url)


def expand(url: str, environ: Mapping[str, str] = os.environ) -> str:
    """``url`` with each ``${NAME}`` replaced by the variable's value.

    Raises:
        MissingVariable: naming the first variable that is not set.

    Example:
        >>> expand("postgresql://me:${PW}@host/db", {"PW": "s3cret"})
        'postgresql://me:s3cret@host/db'
        >>> expand("postgresql://me:${PW}@host/db", {})
        Traceback (most recent call last):
        ...
        aimlutils.hyper_opt.storage.secrets.MissingVariable: PW
    """
    missing = [name for name in references(url) if name not in environ]
    if missing:
        raise MissingVariable(missing[0])
    return _REFERENCE.sub(lambda m: environ[m.group(1)], url)


def password(url: str) -> str | None:
    """The password ``url`` holds as written (its user's, or a ``password=`` parameter's).

    Example:
        >>> password("redis://:pw@host:6379/0"), password("postgresql://u@h/db?password=pw")
        ('pw', 'pw')
        >>> password("postgresql://u@h/db") is None, password("postgresql://u:@h/db") is None
        (True, True)
    """
    for match in _PASSWORD.finditer(url):
        found = match.group(2) if match.group(2) is not None else match.group(5)
        if found:
            return found
    return None


def inline_password(url: str) -> str | None:
    """The password written literally in ``url``: not one that comes from ``${NAME}``.

    Example:
        >>> inline_password("postgresql://me:secret@host/db")
        'secret'
        >>> inline_password("postgresql://me:${DB_PASSWORD}@host/db") is None
        True
    """
    found = password(url)
    return None if found is None or _REFERENCE.fullmatch(found) else found


def with_password(url: str, secret: str) -> str:
    """``url`` with its password (added after the user when it has none) set to ``secret``.

    Example:
        >>> with_password("redis://host:6379/0", "${X}"), with_password("mysql+pymysql://root@h/db", "p")
        ('redis://:${X}@host:6379/0', 'mysql+pymysql://root:p@h/db')
        >>> with_password("postgresql://u@h/db?password=old", "new")
        'postgresql://u@h/db?password=new'
    """
    if password(url) is not None:

        def put(match: re.Match[str]) -> str:
            if match.group(2) is not None:
                return f"{match.group(1)}{secret}{match.group(3)}"
            return f"{match.group(4)}{secret}"

        return _PASSWORD.sub(put, url, count=1)
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    user, at, host = netloc.rpartition("@")
    return f"{scheme}://{user.split(':', 1)[0]}:{secret}@{host if at else netloc}{slash}{tail}"


def written_form(url: str) -> tuple[str, str | None]:
    """``(url as the package writes it, the inline password or None)``.

    Example:
        >>> written_form("postgresql://me:secret@host/db")
        ('postgresql://me:${AIMLUTILS_STORAGE_PASSWORD}@host/db', 'secret')
        >>> written_form("postgresql://me:${PW}@host/db")
        ('postgresql://me:${PW}@host/db', None)
    """
    secret = inline_password(url)
    if secret is None:
        return url, None
    return with_password(url, "${" + PASSWORD_ENV + "}"), secret


SAFER_WAYS = (
    "safer: leave the password out of the URL and use the driver's own way (~/.pgpass with mode "
    "0600 or PGPASSWORD for PostgreSQL, MYSQL_PWD for MySQL/MariaDB, REDISCLI_AUTH for Redis), or "
    "name a variable in the URL (postgresql://me:${DB_PASSWORD}@host/db)"
)

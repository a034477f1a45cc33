"""The package's errors, one family with one table of exit codes; and config errors' reporting.

Every exception the package defines derives from :class:`HyperOptException`, which carries the
exit code a command ends with when it stops on that exception. Errors derive from
:class:`HyperOptError` (an ``Exception``); a request to stop a trial
(:class:`~aimlutils.hyper_opt.stop.TrialInterrupted`) is a ``KeyboardInterrupt`` as Ctrl-C is, so
that a user's ``except Exception`` in a training loop does not swallow it: hence a root below
``BaseException``, as Python's own is.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pydantic import ValidationError


class ExitCode(enum.IntEnum):
    """Every exit code of ``optimize.py``, its commands, a worker and the storage proxy.

    Example:
        >>> int(ExitCode.CONFIG), ExitCode.of_signal(15)  # SIGTERM
        (2, 143)
    """

    OK = 0
    """Done; for a worker, also: stopped between trials with nothing to continue."""
    FAILED = 1
    """A command could not do its work: no such study, a rerun that failed, the storage gone."""
    CONFIG = 2
    """A problem in ``hyper.yml``, ``model.yml`` or the command line; nothing was created."""
    STUDY_STOPPED = 3
    """The study stopped: its last ``optuna.max_failures`` trials failed by the objective's error."""
    STORAGE_GONE = 75
    """A worker met a storage outage longer than ``optuna.storage_wait_s`` (``EX_TEMPFAIL``)."""
    LEFT_FOR_LATER = 99
    """A worker in a batch job left as its time ran out, or its node was marked bad, with trials
    to go: the job requeues (off the bad nodes)."""
    INTERRUPTED = 130
    """Ctrl-C (SIGINT); other signals end a process with 128 + their number (:meth:`of_signal`)."""

    @staticmethod
    def of_signal(signum: int) -> int:
        """The shells' exit code of a process ended by ``signum``: 128 + its number."""
        return 128 + int(signum)


#: The exit code of every configuration error, as the shells' "usage" convention.
CONFIG_ERROR_EXIT_CODE = int(ExitCode.CONFIG)


class HyperOptException(BaseException):
    """The root of every exception of the package; ``exit_code`` is what a command then exits with."""

    exit_code: int = ExitCode.FAILED


class HyperOptError(HyperOptException, Exception):
    """An error of the package (as opposed to a request to stop, which is a ``KeyboardInterrupt``)."""


def format_value(value: Any) -> str:
    """Show a config value the way a user wrote it, shortened when long."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong in a config file.

    ``path`` is the dotted key path (``optuna.parameters.dropout.settings.low``), ``message`` says
    what is wrong with the value and what is allowed.
    """

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(HyperOptError):
    """All the problems found in a configuration, reported together.

    Example:
        >>> err = ConfigError([Problem("optuna.n_trials", "got -1; must be an integer >= 1")])
        >>> print(err)
        hyper.yml has 1 problem:
          - optuna.n_trials: got -1; must be an integer >= 1
    """

    exit_code = ExitCode.CONFIG

    def __init__(self, problems: Iterable[Problem], source: str = "hyper.yml") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        lines = [f"{self.source} has {count} {noun}:"]
        lines += [f"  - {problem}" for problem in self.problems]
        return "\n".join(lines)


def join_path(*parts: object) -> str:
    """Join key-path parts with dots, skipping empty parts."""
    return ".".join(str(part) for part in parts if part != "")


def _key_path(data: Any, loc: tuple[Any, ...], missing: bool) -> tuple[Any, ...]:
    """``loc`` without the union-member tags pydantic inserts (``direction.literal[...]``).

    A part is kept only where it is a real key (or index) of the data at that level.
    """
    out = []
    node = data
    for index, part in enumerate(loc):
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            node = node[part]
        elif not (missing and index == len(loc) - 1):
            continue  # a tag: only a "missing" error names a key the data lacks, and last
        out.append(part)
    return tuple(out)


def pydantic_problems(
    error: ValidationError,
    prefix: str = "",
    allowed_keys: Callable[[tuple[Any, ...]], Sequence[str]] | None = None,
    data: Any = None,
) -> list[Problem]:
    """Turn a pydantic error into :class:`Problem` objects under the key path ``prefix``.

    ``data`` is the validated input, used to drop union-member tags from key paths (only the
    first alternative's message is kept). ``allowed_keys(loc)`` lists the keys allowed beside an
    unknown key at ``loc``, so the message can list them and suggest the closest one.
    """
    problems: dict[str, Problem] = {}
    for item in error.errors():
        loc = tuple(item["loc"])
        loc = _key_path(data, loc, item["type"] == "missing") if data is not None else loc
        path = join_path(prefix, *loc)
        if path in problems:
            continue
        if item["type"] == "extra_forbidden":
            message = "unknown key"
            if allowed_keys is not None:
                allowed = list(allowed_keys(loc[:-1]))
                close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
                message += f" (did you mean {close[0]!r}?)" if close else ""
                message += f"; allowed here: {', '.join(allowed)}"
        elif item["type"] == "missing":
            message = "required key is missing"
        else:
            message = f"got {format_value(item['input'])}; {item['msg'][0].lower()}{item['msg'][1:]}"
        problems[path] = Problem(path, message)
    # Of a union's alternatives, keep the one that got furthest into the value.
    return [p for p in problems.values() if not any(q.startswith(p.path + ".") for q in problems)]

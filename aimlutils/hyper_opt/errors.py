"""Errors a user can make in ``hyper.yml`` / ``model.yml`` and how they are reported."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pydantic import ValidationError

#: Exit code for every configuration error, as the shells' "usage" convention.
CONFIG_ERROR_EXIT_CODE = 2


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


class ConfigError(Exception):
    """All the problems found in a configuration, reported together.

    Example:
        >>> err = ConfigError([Problem("optuna.n_trials", "got -1; must be an integer >= 1")])
        >>> print(err)
        hyper.yml has 1 problem:
          - optuna.n_trials: got -1; must be an integer >= 1
    """

    exit_code = CONFIG_ERROR_EXIT_CODE

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

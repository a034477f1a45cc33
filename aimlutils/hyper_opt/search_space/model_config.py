"""Reading and writing values of the model config by key path (``optimizer:learning_rate``)."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from aimlutils.hyper_opt.errors import format_value

#: Separator between nested keys in an ``optuna.parameters`` key, as in the original package.
COLON = ":"


def split_colon_path(key: str) -> tuple[str, ...]:
    """``"optimizer:learning_rate"`` -> ``("optimizer", "learning_rate")``."""
    return tuple(key.split(COLON))


def locate(conf: Mapping[str, Any], path: tuple[str, ...]) -> tuple[bool, str | None]:
    """Whether ``path`` names an existing value of ``conf``.

    Returns ``(found, problem)``: ``problem`` is set when the path runs through a value that is
    not a mapping, which no value could ever be written under.
    """
    node: Any = conf
    for depth, key in enumerate(path):
        if not isinstance(node, Mapping):
            walked = ".".join(path[:depth])
            return False, (
                f"'{walked}' in the model config is {format_value(node)} "
                f"({type(node).__name__}), not a mapping, so '{key}' cannot be set inside it"
            )
        if key not in node:
            return False, None
        node = node[key]
    return True, None


def get_value(conf: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at ``path``; every key must exist (check with :func:`locate` first)."""
    node: Any = conf
    for key in path:
        node = node[key]
    return node


def set_value(conf: MutableMapping[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Write ``value`` at ``path``; every key but the last must already exist."""
    node: Any = conf
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value

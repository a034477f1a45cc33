"""Small text helpers shared by the commands, the launchers and the config checks."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml


def show(value: Any) -> str:
    """A value for a table or a message: floats to 6 significant digits.

    Example:
        >>> show(0.123456789), show(3), show("relu")
        ('0.123457', '3', 'relu')
    """
    return f"{value:.6g}" if isinstance(value, float) and math.isfinite(value) else str(value)


def as_list(value: Any) -> list[Any]:
    """``value`` as a list: ``None`` is empty, a scalar is one item."""
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def tail(path: Path, lines: int, missing: str, empty: str = "") -> str:
    """The last ``lines`` lines of a text file; ``missing`` when it cannot be read, ``empty`` when empty."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return missing
    return "\n".join(text.rstrip("\n").splitlines()[-lines:]) or empty


def scalar(text: str) -> Any:
    """A number where Python reads one (``1e-5``, which YAML 1.1 reads as text), else YAML."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def top_level_commas(text: str, start: int) -> list[int]:
    """Positions of the commas outside quotes and brackets: those of Hydra's ``a,b,c``."""
    commas, depth, quote = [], 0, ""
    for index in range(start, len(text)):
        char = text[index]
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            commas.append(index)
    return commas

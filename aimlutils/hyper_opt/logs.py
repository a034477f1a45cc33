"""Logging for the launcher and the workers: the terminal (or a worker's log) plus ``log.save_path``."""

from __future__ import annotations

import logging
from pathlib import Path


def configure_logging(
    log_file: Path | None, prefix: str = "", level: int = logging.INFO, console_level: int = logging.NOTSET
) -> None:
    """Send the package's records to stderr (from ``console_level`` up) and, when configured,
    append them to ``log_file``."""
    fmt = logging.Formatter(
        f"%(asctime)s %(levelname)s {prefix + ': ' if prefix else ''}%(name)s: %(message)s"
    )
    root = logging.getLogger("aimlutils")
    root.setLevel(level)
    root.handlers.clear()
    stream = logging.StreamHandler()
    stream.setFormatter(fmt)
    stream.setLevel(console_level)
    root.addHandler(stream)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file, mode="a", encoding="utf-8")
        handler.setFormatter(fmt)
        root.addHandler(handler)

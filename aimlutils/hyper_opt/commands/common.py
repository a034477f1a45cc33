"""What the commands share: messages, and loading the config of an existing study."""

from __future__ import annotations

from rich.console import Console

from aimlutils.hyper_opt.config import RunConfig, load_config


def say(console: Console, text: str) -> None:
    console.print(text, markup=False, highlight=False)


def load_for_study(hyper: str, model: str | None) -> RunConfig:
    """The config of an existing study; ``model.yml`` defaults to the copy saved when it started."""
    if model is not None:
        return load_config(hyper, model)
    first = load_config(hyper, None)
    saved = first.save_path / "configs" / "model.yml"
    return load_config(hyper, saved) if saved.exists() else first

"""What the commands share: messages, and loading the config of an existing study."""

from __future__ import annotations

import optuna
from rich.console import Console

from aimlutils.hyper_opt.config import RunConfig, load_config
from aimlutils.hyper_opt.coordination.checkpoints import checkpoint_space
from aimlutils.hyper_opt.coordination.usage import Usage, limits_of


def say(console: Console, text: str) -> None:
    console.print(text, markup=False, highlight=False)


def load_for_study(hyper: str, model: str | None) -> RunConfig:
    """The config of an existing study; ``model.yml`` defaults to the copy saved when it started."""
    if model is not None:
        return load_config(hyper, model)
    first = load_config(hyper, None)
    saved = first.save_path / "configs" / "model.yml"
    return load_config(hyper, saved) if saved.exists() else first


def usage_lines(cfg: RunConfig, study: optuna.Study, accounted: float | None = None) -> list[str]:
    """What the study has used: time, GPU-hours and the budgets left; checkpoint space.
    ``accounted``: the GPU-hours the scheduler's accounting charged to the study's jobs."""
    limits = limits_of(cfg)
    usage = Usage.of(study.get_trials(deepcopy=False), limits.running_default)
    lines = [f"Used: {limits.left(usage)}"]
    if accounted is not None:
        lines.append(
            f"GPU-hours by the scheduler's accounting: {accounted:.4g} for the study's jobs, "
            f"{accounted - usage.gpu_hours:+.4g} against the trials' own count (time in jobs outside "
            "trials: start-up, waiting, the proxy)"
        )
    if spent := limits.spent(usage):
        lines.append(f"The study starts no more trials: {spent}.")
    held, freed = checkpoint_space(cfg.paths)
    if held or freed:
        keep = cfg.optuna.checkpoints.keep_best
        kept = "all kept" if keep is None else f"optuna.checkpoints.keep_best = {keep}"
        lines.append(f"Checkpoints: {_size(held)} held, {_size(freed)} freed ({kept})")
    return lines


def _size(n: int) -> str:
    """Bytes in words.

    >>> _size(512), _size(3 * 1024**3)
    ('512 B', '3.0 GB')
    """
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("kB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"

"""A study's report: the trials table, the winning model config(s), and plots for papers and browsers.

``optimize.py report hyper.yml`` prints the summary and calls :func:`write_report`, which writes
``save_path/report/``:

- ``trials.csv``: every finished trial, as ``trial_results.csv`` has it, rebuilt from the study;
- ``best.yml``: the model config with the best trial's values applied (one objective), or
  ``pareto/trial_N.yml`` for each trial on the Pareto front (several objectives);
- ``reproduce/trial_N.yml``: for each of those trials, what it takes to run it again
  (:mod:`aimlutils.hyper_opt.objective.reproduce`);
- ``plots/``: each plot as PNG, PDF and HTML (see :class:`PlotStyle` for the look).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from aimlutils.hyper_opt.config import RunConfig
from aimlutils.hyper_opt.coordination import ResultsCsv, read_record
from aimlutils.hyper_opt.objective.reproduce import write_reproductions
from aimlutils.hyper_opt.report._plots import PlotResult, top_params, write_plots
from aimlutils.hyper_opt.report._style import PlotStyle, load_style
from aimlutils.hyper_opt.report._tables import (
    StateStats,
    best_config,
    ranked,
    seconds,
    state_stats,
    trial_header,
    wall_time,
    write_config,
)

__all__ = [
    "PlotResult",
    "PlotStyle",
    "Report",
    "StateStats",
    "best_config",
    "load_style",
    "ranked",
    "seconds",
    "state_stats",
    "top_params",
    "wall_time",
    "write_plots",
    "write_report",
]


@dataclasses.dataclass(frozen=True)
class Report:
    """What :func:`write_report` found and wrote."""

    out_dir: Path
    n_trials: int
    n_complete: int
    message: str | None
    """A sentence for a study with no, one, or only failed completed trials; else ``None``."""
    configs: list[Path]
    """``best.yml``, or one file per Pareto-optimal trial."""
    csv_path: Path | None
    plots: PlotResult
    notes: list[str]
    records: list[Path] = dataclasses.field(default_factory=list)
    """``reproduce/trial_N.yml`` for the best trial(s)."""


def write_report(
    cfg: RunConfig, study: optuna.Study, out_dir: Path | None = None, style: PlotStyle | None = None
) -> Report:
    """Write the trials table, the best config(s) and the plots into ``out_dir``.

    ``out_dir`` defaults to ``save_path/report``. A study with no completed trial gets the table
    only, one with a single completed trial no plots; :attr:`Report.message` says which.

    Example::

        from aimlutils.hyper_opt.commands.common import load_for_study
        cfg = load_for_study("results/torch/configs/hyper.yml", None)
        study = optuna.load_study(study_name=cfg.study_name, storage=...)
        write_report(cfg, study).configs  # [PosixPath('results/torch/report/best.yml')]
    """
    out = out_dir or cfg.save_path / "report"
    out.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    csv_path = None
    if any(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) for t in trials):
        csv_path = out / "trials.csv"
        with ResultsCsv(csv_path) as table:
            table.export(study)
    configs, notes = _write_configs(cfg, study, out, complete)
    records = []
    if complete:
        chosen = [study.best_trial] if len(study.directions) == 1 else study.best_trials
        chosen = sorted(chosen, key=lambda t: t.number)
        records = write_reproductions(cfg.paths, chosen, cfg.metrics, out / "reproduce")
    plots = PlotResult()
    if len(complete) >= 2:
        plots = write_plots(study, cfg.metrics, out / "plots", style or PlotStyle())
    message = _message(study.study_name, trials, complete)
    return Report(out, len(trials), len(complete), message, configs, csv_path, plots, notes, records)


def _write_configs(
    cfg: RunConfig, study: optuna.Study, out: Path, complete: list[FrozenTrial]
) -> tuple[list[Path], list[str]]:
    if not complete:
        return [], []
    if not cfg.model:
        return [], [
            "no model config: give model.yml, or keep the copy in save_path/configs/, to get best.yml"
        ]
    if len(study.directions) == 1:
        chosen, folder = [study.best_trial], out
    else:
        # The front changes as the study goes on; stale files would list trials no longer on it.
        folder = out / "pareto"
        shutil.rmtree(folder, ignore_errors=True)
        chosen = sorted(study.best_trials, key=lambda t: t.number)
    written, notes = [], []
    for trial in chosen:
        conf, found = best_config(cfg, trial)
        notes += [n for n in found if n not in notes]
        path = folder / ("best.yml" if folder == out else f"trial_{trial.number}.yml")
        write_config(path, conf, trial_header(study, trial, cfg.metrics))
        written.append(path)
    return written, notes


def _message(name: str, trials: list[FrozenTrial], complete: list[FrozenTrial]) -> str | None:
    if not trials:
        return f"Study {name!r} has no trials yet: nothing to report."
    if len(complete) == 1:
        return (
            f"Only 1 trial of study {name!r} has completed: its config is written, "
            "but plots need at least 2 completed trials."
        )
    if complete:
        return None
    counts = {s: sum(t.state == s for t in trials) for s in TrialState}
    failed = [t for t in trials if t.state == TrialState.FAIL]
    # Re-queued parameters wait as WAITING trials; they do not make a failed study less failed.
    if failed and len(failed) + counts[TrialState.WAITING] == len(trials):
        reason = read_record(failed[0]).get("fail_reason") or "no reason recorded"
        return (
            f"All {len(failed)} finished trials of study {name!r} failed, so there is no best trial "
            f"and nothing to plot. The first failure (trial {failed[0].number}): {reason}"
        )
    return (
        f"No trial of study {name!r} has completed yet ({counts[TrialState.PRUNED]} pruned, "
        f"{counts[TrialState.FAIL]} failed, {counts[TrialState.RUNNING]} running): "
        "no best trial and nothing to plot yet."
    )

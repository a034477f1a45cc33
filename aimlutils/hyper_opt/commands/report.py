"""``optimize.py report``: a study's summary in the terminal, its files in ``save_path/report/``."""

from __future__ import annotations

import argparse

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial
from rich.console import Console
from rich.table import Table

from aimlutils.hyper_opt._text import show
from aimlutils.hyper_opt.commands.common import load_for_study, say, usage_lines
from aimlutils.hyper_opt.config import CONFIG_ERROR_EXIT_CODE, RunConfig
from aimlutils.hyper_opt.coordination import RETRY_OF_ATTR, StudyStop, read_record
from aimlutils.hyper_opt.coordination import study as study_lib
from aimlutils.hyper_opt.errors import ExitCode
from aimlutils.hyper_opt.report import (
    Report,
    load_style,
    progress,
    ranked,
    seconds,
    state_stats,
    wall_time,
    write_report,
)
from aimlutils.hyper_opt.storage import open_for_command, study_exists

#: Exit code when the study does not exist.
NO_STUDY_EXIT_CODE = int(ExitCode.FAILED)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``optimize.py report`` beside ``hyper`` and ``model``."""
    parser.add_argument(
        "--style", metavar="FILE", help="plot style YAML: size, dpi, fonts, log axes, formats"
    )
    parser.add_argument(
        "--top-k", type=int, default=10, metavar="K", help="trials in the table of the best (default 10)"
    )


def report(args: argparse.Namespace, console: Console) -> int:
    """Print trials by state, run times, the best trial(s) and the top k; write ``save_path/report/``."""
    if args.top_k < 1:
        say(console, f"--top-k must be at least 1, got {args.top_k}")
        return CONFIG_ERROR_EXIT_CODE
    cfg = load_for_study(args.hyper, args.model)
    style = load_style(args.style)
    storage = open_existing(cfg)
    if storage is None:
        say(console, no_study(cfg))
        return NO_STUDY_EXIT_CODE
    study = study_lib.load(cfg, storage, 1)
    say(console, f"Study {cfg.study_name!r} in {cfg.storage}")
    result = write_report(cfg, study, style=style)
    _print_summary(console, cfg, study)
    if result.message:
        say(console, result.message)
    if result.n_complete:
        _print_best(console, cfg, study, args.top_k)
    _print_files(console, result)
    if cfg.schema.mlflow is not None and result.n_complete:
        from aimlutils.hyper_opt.objective import tracking  # MLflow is imported only for studies that use it

        try:
            say(console, tracking.log_best(cfg, study))
        except Exception as err:  # the report is written; say what MLflow answered
            say(console, f"MLflow: the best trial was not logged ({type(err).__name__}: {err})")
            return 1
    return 0


def open_existing(cfg: RunConfig) -> BaseStorage | None:
    """The study's storage, or ``None`` when the study does not exist (nothing is created)."""
    if not cfg.storage.storage_kind.exists(cfg.storage.location):
        return None
    storage = open_for_command(cfg.storage, cfg.optuna.storage_wait_s)
    return storage if study_exists(storage, cfg.study_name) else None


def no_study(cfg: RunConfig) -> str:
    return (
        f"No study {cfg.study_name!r} in {cfg.storage}: start it with 'optimize.py hyper.yml model.yml', "
        "or check optuna.name and optuna.storage in hyper.yml."
    )


def _print_summary(console: Console, cfg: RunConfig, study: optuna.Study) -> None:
    trials = study.get_trials(deepcopy=False)
    say(console, progress.snapshot(study, cfg.optuna.n_trials).line())
    stop = StudyStop.read(cfg.paths.stopped)
    if stop is not None:
        say(console, stop.message())
    if not trials:
        return
    for line in usage_lines(cfg, study):
        say(console, line)
    table = Table(title="Trials by state and how long they ran")
    for column in ("state", "trials", "min", "median", "mean", "max", "total"):
        table.add_column(column, justify="left" if column == "state" else "right")
    for row in state_stats(trials):
        table.add_row(*row.cells())
    console.print(table)
    continued = [(t.number, t.user_attrs[RETRY_OF_ATTR]) for t in trials if RETRY_OF_ATTR in t.user_attrs]
    if continued:
        say(
            console,
            f"Continued trials ({len(continued)}; each picks up its checkpoint and learning curve): "
            + ", ".join(f"{n} continues {of}" for n, of in continued),
        )
    wall = wall_time(trials)
    if wall is not None:
        say(
            console,
            f"Study wall time: {seconds(wall.total_seconds())} (first trial's start to the last one's "
            "end, or to now while trials run)",
        )


def _print_best(console: Console, cfg: RunConfig, study: optuna.Study, top_k: int) -> None:
    if len(study.directions) == 1:
        best = study.best_trial
        of = best.user_attrs.get(RETRY_OF_ATTR)
        continues = f" (continues trial {of})" if of is not None else ""
        say(console, f"Best trial {best.number}{continues}: {cfg.metrics[0]} = {show(best.value)}")
        results = read_record(best).get("results") or {}
        others = {k: v for k, v in results.items() if k not in cfg.metrics}
        if others:
            say(console, "  also returned: " + ", ".join(f"{k}={show(v)}" for k, v in others.items()))
        say(console, "  parameters: " + ", ".join(f"{k}={show(v)}" for k, v in best.params.items()))
        title = f"Top {len(ranked(study, top_k))} trials by {cfg.metrics[0]}"
    else:
        front = study.best_trials
        say(console, f"Pareto front: {len(front)} trials ({', '.join(_directed(cfg))})")
        title = f"Pareto front by {cfg.metrics[0]}" + (f" (first {top_k})" if len(front) > top_k else "")
    console.print(_top_table(ranked(study, top_k), cfg, title))


def _directed(cfg: RunConfig) -> list[str]:
    return [f"{m} {d}d" for m, d in zip(cfg.metrics, cfg.directions, strict=True)]


def _top_table(trials: list[FrozenTrial], cfg: RunConfig, title: str) -> Table:
    params = list(dict.fromkeys(name for t in trials for name in t.params))
    table = Table(title=title)
    for column in ("#", "trial", *cfg.metrics, "duration", *params):
        table.add_column(column, justify="right")
    for rank, t in enumerate(trials, start=1):
        duration = (
            seconds((t.datetime_complete - t.datetime_start).total_seconds())
            if t.datetime_start and t.datetime_complete
            else ""
        )
        values = [show(v) for v in t.values or []]
        table.add_row(
            str(rank), str(t.number), *values, duration, *[show(t.params.get(p, "")) for p in params]
        )
    return table


def _print_files(console: Console, result: Report) -> None:
    written = [str(p.relative_to(result.out_dir)) for p in result.configs]
    written += [str(p.relative_to(result.out_dir)) for p in result.records]
    if result.csv_path is not None:
        written.append(result.csv_path.name)
    if result.plots.files:
        names = sorted({p.stem for p in result.plots.files})
        kinds = sorted({p.suffix[1:] for p in result.plots.files})
        written.append(f"plots/ ({len(names)} plots as {', '.join(kinds)})")
    if written:
        say(console, f"Wrote to {result.out_dir}: {', '.join(written)}")
    for name, why in result.plots.skipped.items():
        say(console, f"Not drawn: {name}: {why}")
    for note in [*result.notes, *result.plots.notes]:
        say(console, f"Note: {note}")

"""``optimize.py``: run a study (the default), or look at / cancel one.

optimize.py hyper.yml model.yml [key=value ...] [--local] [--workers N] [--reload] [--dry-run] [--export-csv]
                                [--debug]
optimize.py status hyper.yml [model.yml]
optimize.py cancel hyper.yml [model.yml]
optimize.py report hyper.yml [model.yml] [--style style.yml] [--top-k K]
optimize.py rerun hyper.yml N [model.yml]
optimize.py dashboard hyper.yml [model.yml] [--port P]
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from aimlutils.hyper_opt.errors import ConfigError, HyperOptError
from aimlutils.hyper_opt.search_space import sweeper_keys

if TYPE_CHECKING:
    from rich.console import Console

Command = Callable[[argparse.Namespace, "Console"], int]


def _load(target: str) -> Any:
    """``module:name`` of :mod:`aimlutils.hyper_opt.commands`, imported now: each command loads
    only what it needs (a run does not load the report's tables, nor the dashboard's server)."""
    module, name = target.split(":")
    return getattr(importlib.import_module(f"aimlutils.hyper_opt.commands.{module}"), name)


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optimize.py",
        description="Distributed hyperparameter optimization with Optuna: one shared study, many workers. "
        "Other commands: 'optimize.py status|cancel|report|dashboard hyper.yml', "
        "'optimize.py rerun hyper.yml N' (-h on each).",
    )
    parser.add_argument("hyper", help="hyperparameter config (log / slurm / pbs / optuna sections)")
    parser.add_argument("model", help="the model config you train with")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="change the run: 'optimizer:lr=interval(1e-5, 1e-3)', 'model:act=choice(relu, tanh)', "
        "'trainer:batch=range(16, 128, step=16)', 'tag(log, interval(...))', a plain value fixes a "
        "model-config value, 'optuna.n_trials=50' sets hyper.yml, as does 'hydra.sweeper.n_trials=50'",
    )
    parser.add_argument(
        "--local", action="store_true", help="run the workers on this machine, even with a slurm/pbs section"
    )
    parser.add_argument(
        "--workers", type=int, metavar="N", help="local workers (default: one per GPU, else 2)"
    )
    parser.add_argument(
        "--reload", action="store_true", help="continue an existing study (as optuna.reload: 1)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the job script and submit command; submit nothing"
    )
    parser.add_argument("--export-csv", action="store_true", help="rebuild trial_results.csv from the study")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="run one trial in this process and open the debugger (pdb) on its first exception",
    )
    parser.add_argument(
        "-m",
        "--multirun",
        action="store_true",
        help="accepted for command lines of the Hydra Optuna sweeper; no effect (a run is always a study)",
    )
    return parser


def _study_parser(name: str, help_text: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"optimize.py {name}", description=help_text)
    parser.add_argument("hyper", help="the study's hyper.yml")
    parser.add_argument("model", nargs="?", help="model.yml (default: the copy saved in save_path)")
    return parser


# Each command as ``module:function`` of aimlutils.hyper_opt.commands, imported when chosen.
_COMMANDS: dict[str, tuple[str, str]] = {
    "status": (
        "Trials by state, the best so far, running trials and the queue state of the jobs.",
        "status:status",
    ),
    "cancel": ("Cancel the study's jobs and mark the trials they ran FAIL.", "status:cancel"),
    "report": (
        "Summary, best trial(s) and top k in the terminal; best.yml, trials.csv and plots in "
        "save_path/report/.",
        "report:report",
    ),
    "dashboard": ("Serve optuna-dashboard for the study on 127.0.0.1.", "dashboard:dashboard"),
    "rerun": ("Train trial N again here; print its value next to the stored one.", "rerun:rerun"),
}
# Commands whose parser is their own (not hyper.yml and an optional model.yml).
_PARSERS: dict[str, str] = {"rerun": "rerun:parser"}

# Commands with options beside hyper and model.
_OPTIONS: dict[str, str] = {"report": "report:add_arguments", "dashboard": "dashboard:add_arguments"}


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, Command]:
    if argv and argv[0] in _COMMANDS:
        help_text, command = _COMMANDS[argv[0]]
        parser = _load(_PARSERS[argv[0]])() if argv[0] in _PARSERS else _study_parser(argv[0], help_text)
        if argv[0] in _OPTIONS:
            _load(_OPTIONS[argv[0]])(parser)
        return parser.parse_args(argv[1:]), _load(command)
    parser = _run_parser()
    args = parser.parse_intermixed_args(argv)  # -m may follow the overrides, as in Hydra
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    n_jobs = sweeper_keys.local_workers(args.overrides)
    if n_jobs is not None:
        if args.workers is not None and args.workers != n_jobs:
            parser.error(
                f"--workers {args.workers} and hydra.sweeper.n_jobs={n_jobs} differ; give one of them"
            )
        args.workers = n_jobs
    args.no_effect = sweeper_keys.no_effect(args.overrides) + (["-m"] if args.multirun else [])
    return args, _load("run:run")


def main(argv: Sequence[str] | None = None) -> int:
    args, command = parse_args(sys.argv[1:] if argv is None else argv)
    import optuna
    from rich.console import Console

    from aimlutils.hyper_opt.commands.common import say

    console = Console(soft_wrap=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if getattr(args, "no_effect", None):
        say(
            console,
            f"Note: {' '.join(args.no_effect)}: no effect here; optimize.py always runs one Optuna "
            "study, its workers set by --workers (or hydra.sweeper.n_jobs) or the slurm/pbs section.",
        )
    try:
        return command(args, console)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return err.exit_code
    except HyperOptError as err:  # e.g. an outage longer than optuna.storage_wait_s
        print(f"Stopping: {err}", file=sys.stderr)
        return err.exit_code


def report_main(argv: Sequence[str] | None = None) -> int:
    """``aimlutils-report hyper.yml [model.yml]``: the same as ``optimize.py report``."""
    return main(["report", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

"""Search quality against worker count: best value per completed trial, for several samplers.

Each study runs the real worker path (``Worker``: budget, claim lock, ask/tell, records, CSV) with
1, 8 or 32 workers in threads on one journal-file study, the same total trials whatever the worker
count. Trial durations are simulated on a virtual clock (``_workers.py``): every worker is busy
all the time, trials end out of order, and each ask sees exactly the trials finished and running
at that moment, as on a cluster whose trials take minutes, at the CPU cost of the asks alone.

    python benchmarks/search_quality.py                       # the full set, writes docs/
    python benchmarks/search_quality.py --seeds 3 --trials 40 --functions branin --jobs 2
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna

# Run as a script, so this folder is on sys.path.
from _digits import PARAMETERS as DIGITS_PARAMETERS
from _digits import DigitsObjective, model_config
from _doc import write_section
from _problems import PROBLEMS, FunctionObjective
from _quality_report import render, save_figures
from _workers import ClockedObjective, prepare_study, run_workers

from aimlutils.hyper_opt import samplers

WORKERS = (1, 8, 32)


def _tpe(**kwargs: Any) -> Callable[[int, int], dict[str, Any] | None]:
    return lambda workers, seed: {"type": "TPESampler", "seed": seed, **kwargs}


#: Label -> the ``optuna.sampler`` section for (workers, seed); ``None`` is the product's default.
SAMPLERS: dict[str, Callable[[int, int], dict[str, Any] | None]] = {
    "TPE without constant_liar": _tpe(constant_liar=False),
    "TPE + constant_liar": _tpe(constant_liar=True),
    "TPE + constant_liar + n_startup_trials=workers": lambda w, s: _tpe(
        constant_liar=True, n_startup_trials=max(10, w)
    )(w, s),
    "random": lambda workers, seed: {"type": "RandomSampler", "seed": seed},
    "default (no sampler set)": lambda workers, seed: None,
}
#: Not run by default: with Optuna >= 4 the default is the same sampler as "TPE + constant_liar"
#: (``render`` shows the defaults), so running it again would only repeat those studies.
SAME_AS_DEFAULT = "TPE + constant_liar"


def run_case(function: str, sampler: str, workers: int, seed: int, trials: int, epochs: int) -> list[float]:
    """One study; the best value (regret, where the optimum is known) after each completed trial."""
    section: dict[str, Any] = {"n_trials": trials, "direction": "minimize"}
    # Workers offset the seed by their index: studies 1000 apart share no worker seed.
    spec = SAMPLERS[sampler](workers, 1000 * seed)
    if spec is not None:
        section["sampler"] = spec
    objective: type[ClockedObjective]
    if function == "digits":
        section |= {"metric": "val_loss", "parameters": DIGITS_PARAMETERS}
        model, objective, optimum = model_config(epochs), DigitsObjective, 0.0
    else:
        problem = PROBLEMS[function]
        section |= {"metric": "value", "parameters": problem.parameters}
        model, optimum = {"seed": seed}, problem.optimum
        objective = type("Objective", (FunctionObjective,), {"problem": problem})
    with tempfile.TemporaryDirectory(prefix="search-quality-") as tmp:
        cfg = prepare_study(Path(tmp), section, model, workers)
        ended = run_workers(cfg, workers, objective)
    values = [t.value for t in ended if t.value is not None]
    if len(values) != trials:
        raise RuntimeError(
            f"{function}/{sampler}/{workers}/{seed}: {len(values)} of {trials} trials completed"
        )
    return list(np.minimum.accumulate(np.array(values) - optimum))


def _one(case: tuple[str, str, int, int, int, int]) -> tuple[tuple[str, str, int, int], list[float], float]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.process_time()
    curve = run_case(*case)
    return case[:4], curve, time.process_time() - started


def run_all(args: argparse.Namespace) -> tuple[dict[str, Any], float]:
    """Every case, over ``args.jobs`` processes; curves by function, sampler, workers (one per seed)."""
    cases = [
        (f, s, w, seed, args.mlp_trials if f == "digits" else args.trials, args.mlp_epochs)
        for f in args.functions
        for w in args.workers
        for seed in range(args.seeds)
        for s in args.samplers
    ]
    curves: dict[str, Any] = {}
    cpu = 0.0
    with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
        for done, ((f, s, w, _seed), curve, cpu_s) in enumerate(pool.map(_one, cases), 1):
            curves.setdefault(f, {}).setdefault(s, {}).setdefault(str(w), []).append(curve)
            cpu += cpu_s
            print(f"[{done}/{len(cases)}] {f} {s} {w} workers: {curve[-1]:.4g}", file=sys.stderr, flush=True)
    return curves, cpu


def _reference(curves: dict[str, Any]) -> str:
    """The row standing for the default: its own when it was run, else the same sampler's."""
    ran = {s for by_sampler in curves.values() for s in by_sampler}
    return "default (no sampler set)" if "default (no sampler set)" in ran else SAME_AS_DEFAULT


def _list(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    return lambda text: [kind(x) for x in text.split(",") if x]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--functions", type=_list(str), default=[*PROBLEMS, "digits"])
    parser.add_argument(
        "--samplers",
        type=_list(str),
        default=[s for s in SAMPLERS if s != "default (no sampler set)"],
        help=f"of {list(SAMPLERS)}",
    )
    parser.add_argument("--workers", type=_list(int), default=list(WORKERS))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--trials", type=int, default=50, help="trials per study, test functions")
    parser.add_argument("--mlp-trials", type=int, default=12, help="trials per study, digits MLP")
    parser.add_argument("--mlp-epochs", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=1, help="studies run at once, one process each")
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--figures", type=Path, default=Path("docs"), help="folder of the PNG plots")
    parser.add_argument("--json", type=Path, help="also save every curve here")
    parser.add_argument(
        "--from-json", type=Path, help="no runs: write the section from curves saved by --json"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.samplers) - set(SAMPLERS)) + sorted(set(args.functions) - {*PROBLEMS, "digits"})
    if unknown:
        parser.error(f"unknown: {unknown}; functions: {[*PROBLEMS, 'digits']}, samplers: {list(SAMPLERS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        curves, cpu_s, wall_s = saved["curves"], saved["cpu_s"], saved["wall_s"]
    else:
        curves, cpu_s = run_all(args)
        wall_s = time.time() - started
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"curves": curves, "cpu_s": cpu_s, "wall_s": wall_s}))
    figures = save_figures(curves, args.figures)
    defaults = {w: samplers.sampler_spec(None, w) for w in args.workers}
    setup = (
        f"{args.seeds} seeds; {args.trials} trials per study for the test functions, {args.mlp_trials} "
        f"for the digits MLP ({args.mlp_epochs} epochs each); took {wall_s / 60:.1f} min, "
        f"{cpu_s / 60:.1f} CPU-min. Measured {datetime.date.today()} on {platform.machine()}, "
        f"Python {platform.python_version()}, Optuna {optuna.__version__}."
    )
    write_section(
        args.output,
        "search-quality",
        render(curves, figures, args.output.parent, defaults, setup, _reference(curves)),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

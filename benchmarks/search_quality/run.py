"""Search quality against worker count: best value per completed trial, for several samplers.

Each study runs the real worker path (``Worker``: budget, claim lock, ask/tell, records, CSV) with
1, 8 or 32 workers in threads on one journal-file study, the same total trials whatever the worker
count. Trial durations are simulated on a virtual clock (``benchmarks/common/virtual_clock.py``):
every worker is busy all the time, trials end out of order, and each ask sees exactly the trials
finished and running at that moment, as on a cluster whose trials take minutes, at the CPU cost
of the asks alone.

    python -m benchmarks.search_quality --jobs 2              # the full set (~30 CPU-min), writes docs/
    python -m benchmarks.search_quality --seeds 3 --trials 40 --functions branin --jobs 2
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import inspect
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

from aimlutils.hyper_opt.search_space import samplers
from benchmarks.common.digits import PARAMETERS as DIGITS_PARAMETERS
from benchmarks.common.digits import DigitsObjective, model_config
from benchmarks.common.doc import write_section
from benchmarks.common.virtual_clock import ClockedObjective, prepare_study, run_workers, scratch_dir
from benchmarks.search_quality.problems import PROBLEMS, FunctionObjective
from benchmarks.search_quality.report import render, save_figures

WORKERS = (1, 8, 32)


def _tpe(**kwargs: Any) -> Callable[[int, int], dict[str, Any] | None]:
    return lambda workers, seed: {"type": "TPESampler", "seed": seed, **kwargs}


#: Label -> the ``optuna.sampler`` section for (workers, seed); ``None`` is the product's default.
#: The TPE rows set ``multivariate`` and ``constant_liar`` themselves, so that each means the same
#: sampler at every worker count, whatever the product's default makes of a bare ``TPESampler``.
SAMPLERS: dict[str, Callable[[int, int], dict[str, Any] | None]] = {
    "TPE + constant_liar": _tpe(constant_liar=True, multivariate=True),
    "TPE without constant_liar": _tpe(constant_liar=False, multivariate=True),
    "TPE + constant_liar + n_startup_trials=workers": lambda w, s: _tpe(
        constant_liar=True, multivariate=True, n_startup_trials=max(10, w)
    )(w, s),
    # multivariate=False: Optuna's default before 4.0.
    "independent TPE + constant_liar": _tpe(constant_liar=True, multivariate=False),
    "random": lambda workers, seed: {"type": "RandomSampler", "seed": seed},
    "default (no sampler set)": lambda workers, seed: None,
}
DEFAULT = "default (no sampler set)"


def _tpe_defaults() -> dict[str, Any]:
    """Optuna's own values for the TPE arguments the rows set (``multivariate=None``: on, one objective)."""
    params = inspect.signature(optuna.samplers.TPESampler).parameters
    out = {k: params[k].default for k in ("constant_liar", "multivariate", "n_startup_trials")}
    return out | {"multivariate": out["multivariate"] in (None, True)}


def effective(spec: dict[str, Any] | None, workers: int, seed: int | None = None) -> str:
    """What decides a study's trials, as text: rows equal here run one study, shown in each.

    With one worker no other trial is running at an ask, so ``constant_liar`` changes nothing.
    """
    full = samplers.sampler_spec(spec, workers)
    if seed is not None:
        full.setdefault("seed", seed)
    if full.get("type") == "TPESampler":
        full = _tpe_defaults() | full
        if workers == 1:
            full.pop("constant_liar")
    return json.dumps(full, sort_keys=True, default=str)


def default_row(labels: Sequence[str], workers: int) -> str | None:
    """The row that runs the sampler a study gets with no ``optuna.sampler``, at ``workers``."""
    if DEFAULT in labels:
        return DEFAULT
    default = effective(None, workers, seed=0)
    same = [
        s
        for s in SAMPLERS
        if s in labels and s != DEFAULT and effective(SAMPLERS[s](workers, 0), workers) == default
    ]
    return same[0] if same else None


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
    with tempfile.TemporaryDirectory(prefix="search-quality-", dir=scratch_dir()) as tmp:
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


Case = tuple[str, str, int, int]  # function, sampler, workers, seed


def _same_study(case: Case) -> tuple[str, int, int, str]:
    function, sampler, workers, seed = case
    return function, workers, seed, effective(SAMPLERS[sampler](workers, 1000 * seed), workers)


def run_all(args: argparse.Namespace) -> tuple[dict[str, Any], float]:
    """Every case, over ``args.jobs`` processes; curves by function, sampler, workers (one per seed).

    Rows that would run the same study (see :func:`effective`) run it once.
    """
    wanted = [
        (f, s, w, seed)
        for f in args.functions
        for w in args.workers
        for seed in range(args.seeds)
        for s in args.samplers
    ]
    unique: dict[tuple[str, int, int, str], Case] = {}
    for case in wanted:
        unique.setdefault(_same_study(case), case)
    jobs = [
        (*case, args.mlp_trials if case[0] == "digits" else args.trials, args.mlp_epochs)
        for case in unique.values()
    ]
    ran: dict[tuple[str, int, int, str], list[float]] = {}
    cpu = 0.0
    with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
        for done, ((f, s, w, seed), curve, cpu_s) in enumerate(pool.map(_one, jobs), 1):
            ran[_same_study((f, s, w, seed))] = curve
            cpu += cpu_s
            print(f"[{done}/{len(jobs)}] {f} {s} {w} workers: {curve[-1]:.4g}", file=sys.stderr, flush=True)
    curves: dict[str, Any] = {}
    for case in wanted:
        f, s, w, _seed = case
        curves.setdefault(f, {}).setdefault(s, {}).setdefault(str(w), []).append(ran[_same_study(case)])
    return curves, cpu


def _list(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    return lambda text: [kind(x) for x in text.split(",") if x]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.search_quality", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--functions", type=_list(str), default=[*PROBLEMS, "digits"])
    parser.add_argument(
        "--samplers",
        type=_list(str),
        default=[s for s in SAMPLERS if s != DEFAULT],
        help=f"of {list(SAMPLERS)}",
    )
    parser.add_argument("--workers", type=_list(int), default=list(WORKERS))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--trials", type=int, default=256, help="trials per study, test functions")
    parser.add_argument("--mlp-trials", type=int, default=64, help="trials per study, digits MLP")
    parser.add_argument("--mlp-epochs", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="studies run at once, one process each")
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--figures", type=Path, default=Path("docs"), help="folder of the PNG plots")
    parser.add_argument("--json", type=Path, help="also save every curve here")
    parser.add_argument(
        "--from-json", type=Path, help="no runs: write the section from curves saved by --json"
    )
    parser.add_argument("--note", default="", help="a sentence added to the section (how it was run)")
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
    labels = list(dict.fromkeys(s for by_sampler in curves.values() for s in by_sampler))
    defaults = {w: (samplers.sampler_spec(None, w), default_row(labels, w)) for w in args.workers}
    setup = (
        f"{args.seeds} seeds; {args.trials} trials per study for the test functions, {args.mlp_trials} "
        f"for the digits MLP ({args.mlp_epochs} epoch{'s' if args.mlp_epochs > 1 else ''} each); "
        f"took {wall_s / 60:.1f} min, "
        f"{cpu_s / 60:.1f} CPU-min. Measured {datetime.date.today()} on {platform.machine()}, "
        f"Python {platform.python_version()}, Optuna {optuna.__version__}. {args.note}"
    )
    write_section(
        args.output,
        "search-quality",
        render(curves, figures, args.output.parent, defaults, setup),
    )
    return 0

"""Pruning that pays: epochs saved and best accuracy lost by each pruner, digits MLP, 8 workers.

Every study runs the real worker path (``Worker`` in threads, one journal-file study) with the
same seeded TPE sampler; only the pruner changes. Each epoch trains for real and then takes its
CPU time on the virtual clock (``benchmarks/common/virtual_clock.py``), so the pruner sees the
other workers' epochs in the order they would arrive.

    python -m benchmarks.pruning                  # the full set, writes docs/
    python -m benchmarks.pruning --seeds 2 --trials 12 --epochs 4
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from aimlutils.hyper_opt.coordination.records import read_record
from benchmarks.common.digits import PARAMETERS, DigitsObjective, model_config
from benchmarks.common.doc import write_section
from benchmarks.common.virtual_clock import prepare_study, run_workers, scratch_dir


def pruners(epochs: int) -> dict[str, dict[str, Any]]:
    """Label -> ``optuna.pruner`` section; Optuna's defaults, but Hyperband is told the epoch count."""
    return {
        "none (NopPruner)": {"type": "NopPruner"},
        "MedianPruner": {"type": "MedianPruner"},
        "SuccessiveHalvingPruner": {"type": "SuccessiveHalvingPruner"},
        "HyperbandPruner": {"type": "HyperbandPruner", "min_resource": 1, "max_resource": epochs},
    }


#: The recommended pruner saves the most epochs among those losing at most this much best accuracy.
MAX_LOSS = 0.005


def run_case(pruner: str, seed: int, args: argparse.Namespace) -> dict[str, float]:
    """One study: epochs run (of trials x epochs), best validation accuracy and loss."""
    section = {
        "n_trials": args.trials,
        "metric": "val_loss",
        "direction": "minimize",
        "parameters": PARAMETERS,
        "sampler": {"type": "TPESampler", "seed": 1000 * seed},  # workers add their index
        "pruner": pruners(args.epochs)[pruner],
    }
    with tempfile.TemporaryDirectory(prefix="pruning-", dir=scratch_dir()) as tmp:
        cfg = prepare_study(Path(tmp), section, model_config(args.epochs), args.workers)
        ended = run_workers(cfg, args.workers, DigitsObjective)
    complete = [t for t in ended if t.state == optuna.trial.TrialState.COMPLETE]
    accuracy = [read_record(t)["results"]["val_accuracy"] for t in complete]
    return {
        "epochs": float(sum(len(t.intermediate_values) for t in ended)),
        "full": float(args.trials * args.epochs),
        "pruned": float(sum(t.state == optuna.trial.TrialState.PRUNED for t in ended)),
        "best_accuracy": max(accuracy),
        "best_loss": min(t.value for t in complete if t.value is not None),
    }


def _one(job: tuple[str, int, argparse.Namespace]) -> tuple[str, dict[str, float]]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return job[0], run_case(*job)


def summarise(results: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, np.ndarray]]:
    """Per pruner, quartiles (q1, median, q3) over seeds of epochs saved and best accuracy and loss."""
    out = {}
    for pruner, runs in results.items():
        saved = [1 - r["epochs"] / r["full"] for r in runs]
        out[pruner] = {
            "saved": np.percentile(saved, [25, 50, 75]),
            "accuracy": np.percentile([r["best_accuracy"] for r in runs], [25, 50, 75]),
            "loss": np.percentile([r["best_loss"] for r in runs], [25, 50, 75]),
            "pruned": np.percentile([r["pruned"] for r in runs], [25, 50, 75]),
        }
    return out


def recommend(summary: dict[str, dict[str, np.ndarray]]) -> str:
    """The pruner that saves most epochs with its median best accuracy within ``MAX_LOSS`` of no pruning."""
    base = summary["none (NopPruner)"]["accuracy"][1]
    fine = [p for p, s in summary.items() if base - s["accuracy"][1] <= MAX_LOSS and p != "none (NopPruner)"]
    return max(fine, key=lambda p: summary[p]["saved"][1], default="none (NopPruner)")


def save_figure(summary: dict[str, dict[str, np.ndarray]], path: Path) -> None:
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt

    base = summary["none (NopPruner)"]["accuracy"][1]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for pruner, s in summary.items():
        saved, lost = 100 * s["saved"], 100 * (base - s["accuracy"])
        ax.errorbar(
            saved[1], lost[1], xerr=[[saved[1] - saved[0]], [saved[2] - saved[1]]],
            yerr=[[lost[1] - lost[2]], [lost[0] - lost[1]]], fmt="o", capsize=4, label=pruner,
        )  # fmt: skip
    ax.axhline(100 * MAX_LOSS, color="grey", linestyle="--", linewidth=1, label=f"{MAX_LOSS:.1%} loss")
    ax.set_xlabel("epochs saved against no pruning (%)")
    ax.set_ylabel("best val accuracy lost, points (median of no pruning - this)")
    ax.set_title("Pruners on the digits MLP, 8 workers: median, bars q1-q3")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(
    summary: dict[str, dict[str, np.ndarray]], args: argparse.Namespace, figure: str, setup: str
) -> str:
    base = summary["none (NopPruner)"]["accuracy"][1]
    rows = [
        "| pruner | epochs saved | trials pruned | best val accuracy | accuracy lost (points) "
        "| best val_loss |",
        "|---|---|---|---|---|---|",
    ]
    for pruner, s in summary.items():
        sv, pr, acc, loss = s["saved"], s["pruned"], s["accuracy"], s["loss"]
        rows.append(
            f"| {pruner} | {sv[1]:.0%} [{sv[0]:.0%}, {sv[2]:.0%}] | {pr[1]:.0f} of {args.trials} "
            f"| {acc[1]:.4f} [{acc[0]:.4f}, {acc[2]:.4f}] | {100 * (base - acc[1]):.2f} "
            f"| {loss[1]:.4f} [{loss[0]:.4f}, {loss[2]:.4f}] |"
        )
    return "\n".join(
        [
            "## Pruning that pays",
            "",
            f"`python -m benchmarks.pruning` runs the digits MLP of `examples/torch` ({args.epochs} epochs, "
            f"{args.trials} trials per study, {args.workers} workers, TPE with the study's seed) with each "
            f"pruner at Optuna's defaults (Hyperband given `max_resource` = {args.epochs} epochs), over "
            f"{args.seeds} seeds. The objective is `val_loss`, reported each epoch. Epochs saved: 1 - epochs "
            "run / (trials x epochs). Accuracy lost: the median best validation accuracy without pruning "
            f"minus this pruner's. Cells: median [q1, q3] over seeds. {setup}",
            "",
            *rows,
            "",
            f"Recommended (most epochs saved, median best accuracy within {100 * MAX_LOSS:.1f} points of no "
            f"pruning): **{recommend(summary)}**.",
            "",
            f"![pruning]({figure})",
        ]
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pruning", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=1, help="studies run at once, one process each")
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--figure", type=Path, default=Path("docs/pruning.png"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started, cpu = time.time(), 0.0
    jobs = [(p, seed, args) for seed in range(args.seeds) for p in pruners(args.epochs)]
    results: dict[str, list[dict[str, float]]] = {p: [] for p in pruners(args.epochs)}
    with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
        for done, (pruner, result) in enumerate(pool.map(_one, jobs), 1):
            results[pruner].append(result)
            print(f"[{done}/{len(jobs)}] {pruner}: {result}", file=sys.stderr, flush=True)
    cpu = sum(os.times()[2:4])  # the pool's processes, once they are gone
    summary = summarise(results)
    save_figure(summary, args.figure)
    setup = (
        f"Took {(time.time() - started) / 60:.1f} min, {cpu / 60:.1f} CPU-min. "
        f"Measured {datetime.date.today()} on {platform.machine()}, Python {platform.python_version()}, "
        f"Optuna {optuna.__version__}."
    )
    figure = os.path.relpath(args.figure, args.output.parent)
    write_section(args.output, "pruning", render(summary, args, figure, setup))
    return 0

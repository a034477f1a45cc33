"""The plots and the section of ``search_quality.py``: median and quartiles of best value per trial."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

#: Curves: function -> sampler -> workers (as text, JSON keys) -> one best-so-far list per seed.
Curves = dict[str, dict[str, dict[str, list[list[float]]]]]

TITLES = {
    "hartmann6": "Hartmann6 (regret; optimum -3.32237)",
    "branin": "Branin (regret; optimum 0.397887)",
    "mixed": "Categorical + conditional (regret; optimum 0)",
    "digits": "Digits MLP (best val_loss)",
}
#: The Hartmann6 criterion: 32 workers within this factor of 1 sequential worker's regret.
WITHIN = 1.2


def quartiles(runs: list[list[float]]) -> np.ndarray:
    """Rows q1, median, q3 of the best value after each completed trial, over seeds."""
    return np.percentile(np.array(runs), [25, 50, 75], axis=0)


def final(runs: list[list[float]]) -> np.ndarray:
    """q1, median, q3 of the best value at the end of the study."""
    return np.percentile([r[-1] for r in runs], [25, 50, 75])


def mean_over_run(runs: list[list[float]]) -> float:
    """Median over seeds of the mean best value over trials 1..N (the area under the curve, over N)."""
    return float(np.median([np.mean(r) for r in runs]))


def save_figures(curves: Curves, folder: Path) -> dict[str, Path]:
    """One PNG per function, a panel per worker count, a line and quartile band per sampler."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for function, by_sampler in curves.items():
        workers = sorted({int(w) for runs in by_sampler.values() for w in runs})
        fig, axes = plt.subplots(
            1, len(workers), figsize=(4.2 * len(workers), 3.8), sharey=True, squeeze=False
        )
        for ax, w in zip(axes[0], workers, strict=True):
            for sampler, by_workers in by_sampler.items():
                if str(w) not in by_workers:
                    continue
                q1, med, q3 = quartiles(by_workers[str(w)])
                x = np.arange(1, len(med) + 1)
                (line,) = ax.plot(x, med, label=sampler, linewidth=1.6)
                ax.fill_between(x, q1, q3, color=line.get_color(), alpha=0.15, linewidth=0)
            ax.set_title(f"{w} worker{'s' if w > 1 else ''}")
            ax.set_xlabel("trials completed")
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
        axes[0][0].set_ylabel("best value so far" if function == "digits" else "regret (best - optimum)")
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3), fontsize=9, frameon=False)
        fig.suptitle(f"{TITLES.get(function, function)}: median, band q1-q3")
        fig.tight_layout(rect=(0, 0.12, 1, 1))
        paths[function] = folder / f"search_quality_{function}.png"
        fig.savefig(paths[function], dpi=110)
        plt.close(fig)
    return paths


def _cell(runs: list[list[float]] | None) -> str:
    if not runs:
        return "-"
    q1, med, q3 = final(runs)
    return f"{med:.3g} [{q1:.3g}, {q3:.3g}] · {mean_over_run(runs):.3g}"


def table(by_sampler: dict[str, dict[str, list[list[float]]]]) -> str:
    workers = sorted({int(w) for runs in by_sampler.values() for w in runs})
    lines = [
        "| sampler | " + " | ".join(f"{w} worker{'s' if w > 1 else ''}" for w in workers) + " |",
        "|---|" + "---|" * len(workers),
    ]
    for sampler, by_workers in by_sampler.items():
        lines.append(f"| {sampler} | " + " | ".join(_cell(by_workers.get(str(w))) for w in workers) + " |")
    return "\n".join(lines)


def criterion(by_sampler: dict[str, dict[str, list[list[float]]]], reference: str) -> str:
    """Each sampler at its most workers against ``reference`` at 1 worker: final and mean-over-run ratios."""
    base = by_sampler.get(reference, {}).get("1")
    most = max((int(w) for runs in by_sampler.values() for w in runs), default=1)
    if not base or most == 1:
        return ""
    base_final, base_mean = final(base)[1], mean_over_run(base)
    lines = [
        f"| sampler, {most} workers | final regret / sequential | within {WITHIN - 1:.0%}? "
        "| mean regret over the run / sequential |",
        "|---|---|---|---|",
    ]
    for sampler, by_workers in by_sampler.items():
        runs = by_workers.get(str(most))
        if runs:
            ratio = final(runs)[1] / base_final
            ok = "yes" if ratio <= WITHIN else "no"
            lines.append(f"| {sampler} | {ratio:.2f} | {ok} | {mean_over_run(runs) / base_mean:.2f} |")
    return "\n".join(lines)


def _workers_text(curves: Curves) -> str:
    return ", ".join(sorted({w for f in curves.values() for s in f.values() for w in s}, key=int))


def render(
    curves: Curves,
    figures: dict[str, Path],
    doc_dir: Path,
    defaults: dict[int, Any],
    setup: str,
    reference: str,
) -> str:
    """The section; ``reference`` is the sampler row that stands for the default."""
    default_text = "; ".join(f"{w} worker{'s' if w > 1 else ''}: `{spec}`" for w, spec in defaults.items())
    parts = [
        "## Search quality against worker count",
        "",
        "`python benchmarks/search_quality.py` runs each function at 1, 8 and 32 asynchronous workers with "
        f"the same total trials (this run: {', '.join(curves)} at {_workers_text(curves)} workers), "
        "through the real worker path (`Worker` in threads, one journal-file "
        "study). Trial durations are uniform in [0.5, 1.5] time units for the test functions and the "
        "CPU time of each epoch for the MLP, simulated on a virtual clock (`benchmarks/_workers.py`): every "
        "worker stays busy, trials end out of order, and each ask sees the trials finished and running at "
        f"that moment. {setup}",
        "",
        f"The default (no `optuna.sampler` set) is, per worker count: {default_text}; with Optuna's own "
        f"defaults (`constant_liar=True`, `multivariate=True` since Optuna 4), that is the sampler of the "
        f"row `{reference}`, which stands for it below.",
        "",
        "**Per trial** means: at the same number of completed trials N (the study's `n_trials`), the "
        "median over seeds of the final regret (best value found minus the optimum). Each cell is "
        "`median [q1, q3] · mean over the run`, the last being the median over seeds of the regret "
        "averaged over trials 1..N (the area under the curve, over N). Lower is better.",
    ]
    for function, by_sampler in curves.items():
        rel = os.path.relpath(figures[function], doc_dir) if function in figures else None
        parts += ["", f"### {TITLES.get(function, function)}", "", table(by_sampler)]
        if function == "hartmann6":
            check = criterion(by_sampler, reference)
            if check:
                parts += [
                    "",
                    f"Against 1 sequential worker with `{reference}`, at the same trials:",
                    "",
                    check,
                ]
        if rel:
            parts += ["", f"![{function}]({rel})"]
    return "\n".join(parts) + "\n"

"""The plots and the section of the search quality benchmark: median and quartiles of best value per trial."""

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
            for i, (sampler, by_workers) in enumerate(by_sampler.items()):
                if str(w) not in by_workers:
                    continue
                q1, med, q3 = quartiles(by_workers[str(w)])
                x = np.arange(1, len(med) + 1)
                # One colour per sampler in every panel, whichever rows a panel has.
                ax.plot(x, med, label=sampler, linewidth=1.6, color=f"C{i}")
                ax.fill_between(x, q1, q3, color=f"C{i}", alpha=0.15, linewidth=0)
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


def trials_to(runs: list[list[float]], level: float) -> np.ndarray:
    """Per seed, the trials completed when the best value first reached ``level`` (N + 1: never)."""
    out = []
    for run in runs:
        hit = np.flatnonzero(np.array(run) <= level)
        out.append(hit[0] + 1 if hit.size else len(run) + 1)
    return np.array(out)


def level_of(base: list[list[float]]) -> float:
    """The regret level of metric (b): what the sequential reference reaches, in median, halfway."""
    return float(np.median([run[len(run) // 2 - 1] for run in base]))


def _trials_text(runs: list[list[float]], level: float) -> str:
    median = float(np.median(trials_to(runs, level)))
    return f"> {len(runs[0])}" if median > len(runs[0]) else f"{median:.0f}"


def criterion(by_sampler: dict[str, dict[str, list[list[float]]]], reference: str) -> str:
    """Each sampler at more than 1 worker against ``reference`` at 1 worker: metrics (a) and (b)."""
    base = by_sampler.get(reference, {}).get("1")
    many = sorted({int(w) for runs in by_sampler.values() for w in runs} - {1})
    if not base or not many:
        return ""
    level, base_final = level_of(base), final(base)[1]
    base_trials = float(np.median(trials_to(base, level)))
    head = " | ".join(f"{w} workers: (a) final regret / seq. | (b) trials to level / seq." for w in many)
    lines = [f"| sampler | {head} |", "|---|" + "---|---|" * len(many)]
    for sampler, by_workers in by_sampler.items():
        cells = []
        for w in many:
            runs = by_workers.get(str(w))
            if not runs:
                cells += ["-", "-"]
                continue
            a = final(runs)[1] / base_final
            b = float(np.median(trials_to(runs, level))) / base_trials
            cells += [_mark(a, f"{a:.2f}"), _mark(b, f"{b:.2f} ({_trials_text(runs, level)})")]
        lines.append(f"| {sampler} | " + " | ".join(cells) + " |")
    intro = (
        f"Level for (b): {level:.3g}, the median regret of 1 sequential worker with `{reference}` after "
        f"{len(base[0]) // 2} trials, which it reaches after {_trials_text(base, level)} (median). "
        f"**Bold**: within {WITHIN - 1:.0%} of sequential."
    )
    return intro + "\n\n" + "\n".join(lines)


def _mark(ratio: float, text: str) -> str:
    return f"**{text}**" if ratio <= WITHIN else text


def _workers_text(curves: Curves) -> str:
    return ", ".join(sorted({w for f in curves.values() for s in f.values() for w in s}, key=int))


def render(
    curves: Curves,
    figures: dict[str, Path],
    doc_dir: Path,
    defaults: dict[int, tuple[Any, str | None]],
    setup: str,
) -> str:
    """The section; ``defaults``: per worker count, the default sampler spec and the row that runs it."""
    default_text = "; ".join(
        f"{w} worker{'s' if w > 1 else ''}: `{spec}`" + (f" (row `{row}`)" if row else "")
        for w, (spec, row) in defaults.items()
    )
    reference = defaults.get(1, (None, None))[1]
    parts = [
        "## Search quality against worker count",
        "",
        "`python -m benchmarks.search_quality` runs each function at 1, 8 and 32 asynchronous workers with "
        f"the same total trials (this run: {', '.join(curves)} at {_workers_text(curves)} workers), "
        "through the real worker path (`Worker` in threads, one journal-file study on tmpfs). Trial "
        "durations are uniform in [0.5, 1.5] time units for the test functions and the CPU time of each "
        "epoch for the MLP, simulated on a virtual clock (`benchmarks/common/virtual_clock.py`): every "
        "worker stays busy, trials end out of order, and each ask sees the trials finished and running at "
        "that moment. Rows that run the same study (at 1 worker, `constant_liar` changes nothing: no other "
        f"trial is running at an ask) run it once and show it in each. {setup}",
        "",
        f"The default (no `optuna.sampler` set), per worker count: {default_text}.",
        "",
        "**Per trial**, two ways, each against 1 sequential worker with the default, at the same total "
        "trials N: (a) the median over seeds of the final regret (best value found minus the optimum), "
        "as a ratio to sequential; (b) the trials needed to reach a regret level (the median regret "
        "sequential reaches after N/2 trials), median over seeds (a seed that never reaches it counts "
        "N + 1), as a ratio to sequential's. Table cells: final regret `median [q1, q3] · mean over the "
        "run`, the last being the median over seeds of the regret averaged over trials 1..N. Lower is "
        "better throughout.",
    ]
    for function, by_sampler in curves.items():
        rel = os.path.relpath(figures[function], doc_dir) if function in figures else None
        parts += ["", f"### {TITLES.get(function, function)}", "", table(by_sampler)]
        check = criterion(by_sampler, reference) if reference else ""
        if check:
            parts += ["", check]
        if rel:
            parts += ["", f"![{function}]({rel})"]
    return "\n".join(parts) + "\n"

"""The report's plots: each drawn with Matplotlib (PNG, PDF) and Plotly (interactive HTML).

Optuna draws most of them; the learning curves are drawn here, because Optuna's version does not
tell pruned trials from completed ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import math
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState

from aimlutils.hyper_opt.report._curves import Curve, curves, curves_matplotlib, curves_plotly
from aimlutils.hyper_opt.report._style import PIXELS_PER_INCH, PIXELS_PER_POINT, PlotStyle

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: The packages plots need, and the extra that installs them.
NEEDED = ("matplotlib", "plotly", "sklearn")
#: The font size Optuna's Matplotlib plots are drawn at (its ``ggplot`` style sheet).
_OPTUNA_FONT_SIZE = 10.0

Target = Callable[[FrozenTrial], float] | None


@dataclasses.dataclass(frozen=True)
class PlotResult:
    """The files written, the plots not drawn (with why), and remarks on the style."""

    files: list[Path] = dataclasses.field(default_factory=list)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class _Plot:
    name: str
    matplotlib: Callable[[], Any]
    plotly: Callable[[], Any]
    log_value: bool = False
    square: bool = False


def write_plots(study: optuna.Study, metrics: Sequence[str], out_dir: Path, style: PlotStyle) -> PlotResult:
    """Draw every plot that fits the study into ``out_dir`` in the formats ``style`` asks for.

    A plot that cannot be drawn (too few trials, one parameter for a contour) is skipped with the
    reason, so the rest of the report is still written.

    Example::

        result = write_plots(study, ["val_loss"], Path("report/plots"), PlotStyle())
        sorted(p.name for p in result.files)[:2]  # ['contour.html', 'contour.pdf']
    """
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        why = f"plots need {', '.join(missing)}: pip install 'aimlutils[report]'"
        return PlotResult(skipped={"all plots": why})
    if "matplotlib.pyplot" not in sys.modules:
        # No window system on compute or login nodes; a program that already chose a backend
        # (a notebook) keeps it.
        import matplotlib

        matplotlib.use("Agg")
    out_dir.mkdir(parents=True, exist_ok=True)
    result = PlotResult()
    plots = _plan(study, list(metrics), style, result)
    for plot in plots:
        try:
            result.files.extend(_write(plot, out_dir, style))
        except Exception as err:  # one plot's failure must not cost the rest of the report
            result.skipped[plot.name] = f"{type(err).__name__}: {err}"
    return result


def _plan(study: optuna.Study, metrics: list[str], style: PlotStyle, result: PlotResult) -> list[_Plot]:
    from optuna import visualization as pv
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.visualization import matplotlib as mv

    multi = len(metrics) > 1
    targets: list[tuple[str, Target]] = [
        (m, functools.partial(_nth_value, index=i) if multi else None) for i, m in enumerate(metrics)
    ]
    evaluator = FanovaImportanceEvaluator(seed=0)  # the same ranking at every report
    top = top_params(study, targets[0][1], style.top_params)
    plots: list[_Plot] = []
    if multi:
        if len(metrics) in (2, 3):
            kw: dict[str, Any] = {"target_names": metrics}
            plots.append(_both("pareto_front", mv.plot_pareto_front, pv.plot_pareto_front, study, kw))
        else:
            result.skipped["pareto_front"] = f"drawn for 2 or 3 objectives; this study has {len(metrics)}"
    found = curves(study)
    if found:
        log = _log_ok(style, [v for c in found for v in c.values], "learning curves", result)
        plots.append(
            _Plot(
                "intermediate_values",
                functools.partial(curves_matplotlib, found, metrics[0]),
                functools.partial(curves_plotly, found, metrics[0]),
                log_value=log,
            )
        )
    elif not multi:
        result.skipped["intermediate_values"] = "no trial reported intermediate values (trial.report)"
    kw = {"evaluator": evaluator} if multi else {"evaluator": evaluator, "target_name": metrics[0]}
    plots.append(_both("param_importances", mv.plot_param_importances, pv.plot_param_importances, study, kw))
    for metric, target in targets:
        suffix = f"_{re.sub(r'[^A-Za-z0-9_.-]', '_', metric)}" if multi else ""
        kw = {"target": target, "target_name": metric}
        log = _log_ok(style, _values(study, target), metric, result)
        history = _both(
            "optimization_history" + suffix,
            mv.plot_optimization_history,
            pv.plot_optimization_history,
            study,
            kw,
        )
        plots.append(dataclasses.replace(history, log_value=log))
        kw = {**kw, "params": top}
        parallel = _both(
            "parallel_coordinate" + suffix,
            mv.plot_parallel_coordinate,
            pv.plot_parallel_coordinate,
            study,
            kw,
        )
        plots.append(parallel)
        sliced = _both("slice" + suffix, mv.plot_slice, pv.plot_slice, study, kw)
        plots.append(dataclasses.replace(sliced, log_value=log))
        if len(top) >= 2:
            contour = _both("contour" + suffix, mv.plot_contour, pv.plot_contour, study, kw)
            plots.append(dataclasses.replace(contour, square=True))
        else:
            result.skipped["contour" + suffix] = f"needs 2 parameters; the study has {len(top)}"
    return plots


def _nth_value(trial: FrozenTrial, index: int) -> float:
    return float(trial.values[index])


def _both(
    name: str, mpl: Callable[..., Any], plotly: Callable[..., Any], study: Any, kw: dict[str, Any]
) -> _Plot:
    return _Plot(name, functools.partial(mpl, study, **kw), functools.partial(plotly, study, **kw))


def _values(study: optuna.Study, target: Target) -> list[float]:
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return [target(t) if target is not None else float(t.value or 0.0) for t in done]


def _log_ok(style: PlotStyle, values: Sequence[float], what: str, result: PlotResult) -> bool:
    if not style.log_value:
        return False
    if all(v > 0 and math.isfinite(v) for v in values):
        return True
    result.notes.append(f"log_value ignored for {what}: some values are not positive")
    return False


def top_params(study: optuna.Study, target: Target, n: int) -> list[str]:
    """The ``n`` most important parameters (fANOVA), or the first ``n`` when that cannot be computed."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    names = list(dict.fromkeys(name for t in done for name in t.params))
    if len(names) <= n:
        return names
    # Imported here: fANOVA loads scikit-learn, a second's work every other command would pay.
    from optuna.importance import FanovaImportanceEvaluator

    try:
        importances = optuna.importance.get_param_importances(
            study, evaluator=FanovaImportanceEvaluator(seed=0), target=target
        )
    except (ValueError, RuntimeError, ImportError):
        return names[:n]
    return list(importances)[:n]


@contextlib.contextmanager
def _quiet_experimental() -> Iterator[None]:
    # Optuna marks its Matplotlib plots experimental; the report chose them on purpose.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        yield


def _write(plot: _Plot, out_dir: Path, style: PlotStyle) -> list[Path]:
    import matplotlib.pyplot as plt
    import numpy as np

    written: list[Path] = []
    if "png" in style.formats or "pdf" in style.formats:
        with (
            plt.rc_context({"font.family": style.font_family} if style.font_family else None),
            _quiet_experimental(),
        ):
            axes = plot.matplotlib()
            figure: Figure = np.ravel(axes)[0].figure
            try:
                _style_matplotlib(figure, style, plot)
                for fmt in ("png", "pdf"):
                    if fmt in style.formats:
                        path = out_dir / f"{plot.name}.{fmt}"
                        figure.savefig(path, dpi=style.dpi, bbox_inches="tight")
                        written.append(path)
            finally:
                plt.close(figure)
    if "html" in style.formats:
        with _quiet_experimental():
            fig = plot.plotly()
        _style_plotly(fig, style, plot)
        path = out_dir / f"{plot.name}.html"
        # plotly.js is written once beside the pages, so they open offline and stay small.
        fig.write_html(path, include_plotlyjs="directory")
        written.append(path)
    return written


def _style_matplotlib(figure: Figure, style: PlotStyle, plot: _Plot) -> None:
    from matplotlib.text import Text

    figure.set_size_inches(style.width, style.width if plot.square else style.height)
    scale = style.font_size / _OPTUNA_FONT_SIZE
    for text in figure.findobj(Text):
        text.set_fontsize(float(text.get_fontsize()) * scale)
        if style.font_family:
            text.set_fontfamily(style.font_family)
    for ax in figure.axes:
        if plot.log_value and ax.get_label() != "<colorbar>":
            ax.set_yscale("log")
        # Ticks made at draw time (minor ones on log axes) take their size from here.
        ax.tick_params(which="both", labelsize=style.font_size * 0.9)


def _style_plotly(fig: Any, style: PlotStyle, plot: _Plot) -> None:
    height = style.width if plot.square else style.height
    font: dict[str, Any] = {"size": round(style.font_size * PIXELS_PER_POINT)}
    if style.font_family:
        font["family"] = style.font_family
    fig.update_layout(
        width=round(style.width * PIXELS_PER_INCH), height=round(height * PIXELS_PER_INCH), font=font
    )
    if plot.log_value:
        fig.update_yaxes(type="log")


__all__ = ["Curve", "PlotResult", "top_params", "write_plots"]

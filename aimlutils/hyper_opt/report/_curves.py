"""Learning curves: each trial's intermediate values by step, pruned trials marked where they stopped."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

_COLORS = {"COMPLETE": "#1f77b4", "PRUNED": "#999999", "RUNNING": "#ff7f0e"}
_STOP_COLOR = "#d62728"
_BEST_COLOR = "#000000"


@dataclasses.dataclass(frozen=True)
class Curve:
    """One trial's reported values, in step order."""

    number: int
    state: str
    steps: tuple[int, ...]
    values: tuple[float, ...]
    best: bool = False


def curves(study: optuna.Study) -> list[Curve]:
    """The learning curve of every completed, pruned or running trial that reported values.

    Example:
        >>> study = optuna.create_study()
        >>> def objective(trial):
        ...     trial.report(0.5, step=0)
        ...     return 0.4
        >>> study.optimize(objective, n_trials=1)
        >>> curves(study)[0].values
        (0.5,)
    """
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    trials = study.get_trials(deepcopy=False, states=states)
    best = -1
    if len(study.directions) == 1 and any(t.state == TrialState.COMPLETE for t in trials):
        best = study.best_trial.number
    out = []
    for t in trials:
        if not t.intermediate_values:
            continue
        steps = tuple(sorted(t.intermediate_values))
        values = tuple(t.intermediate_values[s] for s in steps)
        out.append(Curve(t.number, t.state.name, steps, values, best=t.number == best))
    # The best trial last, so it is drawn on top.
    return sorted(out, key=lambda c: c.best)


def _title(metric: str) -> str:
    return f"Learning curves: intermediate {metric} by step"


def curves_matplotlib(found: Sequence[Curve], metric: str) -> Any:
    """The curves on Matplotlib axes: completed blue, pruned grey with a red x, running orange."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    plt.style.use("ggplot")  # the look of Optuna's other Matplotlib plots
    _, ax = plt.subplots(tight_layout=True)
    for c in found:
        color = _BEST_COLOR if c.best else _COLORS.get(c.state, "#1f77b4")
        ax.plot(c.steps, c.values, color=color, linewidth=2.0 if c.best else 1.0, alpha=0.8)
        if c.state == "PRUNED":
            ax.plot(c.steps[-1:], c.values[-1:], linestyle="none", marker="x", color=_STOP_COLOR)
    states = {c.state for c in found}
    handles = [Line2D([], [], color=_COLORS[s], label=s.lower()) for s in _COLORS if s in states]
    if "PRUNED" in states:
        handles.append(Line2D([], [], linestyle="none", marker="x", color=_STOP_COLOR, label="pruned here"))
    handles += [
        Line2D([], [], color=_BEST_COLOR, linewidth=2.0, label=f"best (trial {c.number})")
        for c in found
        if c.best
    ]
    ax.legend(handles=handles, loc="best")
    ax.set_title(_title(metric))
    ax.set_xlabel("Step")
    ax.set_ylabel(metric)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    return ax


def curves_plotly(found: Sequence[Curve], metric: str) -> Any:
    """The same curves as an interactive Plotly figure; hovering shows the trial number."""
    import plotly.graph_objects as go

    fig = go.Figure()
    shown: set[str] = set()
    for c in found:
        group = "best" if c.best else c.state.lower()
        color = _BEST_COLOR if c.best else _COLORS.get(c.state, "#1f77b4")
        fig.add_trace(
            go.Scatter(
                x=list(c.steps),
                y=list(c.values),
                mode="lines",
                line={"color": color, "width": 3 if c.best else 1.5},
                opacity=0.8,
                name=f"best (trial {c.number})" if c.best else group,
                legendgroup=group,
                showlegend=group not in shown,
                hovertemplate=f"trial {c.number} ({c.state.lower()})<br>step %{{x}}<br>{metric} %{{y}}"
                "<extra></extra>",
            )
        )
        shown.add(group)
        if c.state == "PRUNED":
            fig.add_trace(
                go.Scatter(
                    x=[c.steps[-1]],
                    y=[c.values[-1]],
                    mode="markers",
                    marker={"symbol": "x", "color": _STOP_COLOR, "size": 9},
                    name="pruned here",
                    legendgroup="stop",
                    showlegend="stop" not in shown,
                    hovertemplate=f"trial {c.number} pruned at step %{{x}}<extra></extra>",
                )
            )
            shown.add("stop")
    fig.update_layout(title=_title(metric), xaxis_title="Step", yaxis_title=metric)
    return fig

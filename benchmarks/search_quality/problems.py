"""The test functions of the search quality benchmark: each a search space, a value and its known optimum.

Trial durations are drawn per trial from its study's seed, uniform in [0.5, 1.5] time units, so
asynchronous workers finish out of order; they are simulated (see
:class:`benchmarks.common.virtual_clock.VirtualClock`).
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna

from benchmarks.common.virtual_clock import ClockedObjective

_H6_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H6_A = np.array(
    [
        [10, 3, 17, 3.5, 1.7, 8],
        [0.05, 10, 17, 0.1, 8, 14],
        [3, 3.5, 1.7, 10, 17, 8],
        [17, 8, 0.05, 10, 0.1, 14],
    ]
)
_H6_P = 1e-4 * np.array(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ]
)


def hartmann6(x: list[float]) -> float:
    """Hartmann's 6-dimensional function on [0, 1]^6; its minimum is -3.32237."""
    inner = np.sum(_H6_A * (np.asarray(x) - _H6_P) ** 2, axis=1)
    return float(-np.sum(_H6_ALPHA * np.exp(-inner)))


def branin(x1: float, x2: float) -> float:
    """Branin's function on [-5, 10] x [0, 15]; its minimum is 0.397887 (at three points)."""
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


#: Offsets of the categorical choice shared by every branch.
_ACTIVATION = {"relu": 0.3, "tanh": 0.1, "gelu": 0.0, "sigmoid": 0.5}


def mixed(trial: optuna.trial.BaseTrial) -> float:
    """A categorical branch with its own (conditional) parameters, plus shared float, int and
    categorical ones; its minimum, 0, is in the ``quadratic`` branch at u=0.7, v=-1.1, x=0.3, n=4, gelu."""
    p = trial.params
    shared = (p["x"] - 0.3) ** 2 + (math.log2(p["n"]) - 2) ** 2 / 16 + _ACTIVATION[p["activation"]]
    if p["branch"] == "linear":
        return 0.5 + abs(trial.suggest_float("c", 0.0, 1.0) - 0.2) + shared
    if p["branch"] == "quadratic":
        u, v = trial.suggest_float("u", -2.0, 2.0), trial.suggest_float("v", -2.0, 2.0)
        return (u - 0.7) ** 2 + (v + 1.1) ** 2 + shared
    w = trial.suggest_float("w", 1.0, 100.0, log=True)
    return 0.2 + 0.5 * (1 - math.cos(math.log(w))) + shared


def _float(name: str, low: float, high: float) -> dict[str, Any]:
    return {"type": "float", "settings": {"name": name, "low": low, "high": high}}


@dataclasses.dataclass(frozen=True)
class Problem:
    """A test function: its ``optuna.parameters``, its value for a trial, its known minimum."""

    name: str
    parameters: dict[str, Any]
    value: Callable[[optuna.trial.BaseTrial], float]
    optimum: float


PROBLEMS = {
    "hartmann6": Problem(
        "hartmann6",
        {f"x{i}": _float(f"x{i}", 0.0, 1.0) for i in range(6)},
        lambda t: hartmann6([t.params[f"x{i}"] for i in range(6)]),
        -3.32237,
    ),
    "branin": Problem(
        "branin",
        {"x1": _float("x1", -5.0, 10.0), "x2": _float("x2", 0.0, 15.0)},
        lambda t: branin(t.params["x1"], t.params["x2"]),
        0.397887,
    ),
    "mixed": Problem(
        "mixed",
        {
            "branch": {
                "type": "categorical",
                "settings": {"name": "branch", "choices": ["linear", "quadratic", "periodic"]},
            },
            "x": _float("x", -1.0, 1.0),
            "n": {"type": "int", "settings": {"name": "n", "low": 1, "high": 16, "log": True}},
            "activation": {
                "type": "categorical",
                "settings": {"name": "activation", "choices": list(_ACTIVATION)},
            },
        },
        mixed,
        0.0,
    ),
}


def duration(seed: int, number: int) -> float:
    """The simulated length of trial ``number`` of the study with ``seed``."""
    return random.Random(f"{seed}-{number}").uniform(0.5, 1.5)  # noqa: S311 (simulated time, no secret)


class FunctionObjective(ClockedObjective):
    """Evaluates ``problem`` (a class attribute), then takes the trial's simulated time."""

    problem: Problem

    def train(self, trial: optuna.trial.BaseTrial, conf: dict[str, Any]) -> dict[str, float]:
        value = self.problem.value(trial)
        self.clock.sleep(duration(conf["seed"], trial.number))
        return {"value": value}

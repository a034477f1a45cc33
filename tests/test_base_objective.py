"""BaseObjective: the seed's contract for a user's Objective, without any worker."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest

from aimlutils.hyper_opt.objective.base import BaseObjective, TrialResultError, check_results
from aimlutils.hyper_opt.objective.loader import build_objective, import_objective_module
from aimlutils.hyper_opt.search_space import SearchSpace

MODEL = {"optimizer": {"learning_rate": 0.1}, "model": {"layers": [4]}}
PARAMETERS = {
    "optimizer:learning_rate": {"type": "loguniform", "settings": {"name": "lr", "low": 1e-4, "high": 1.0}},
    "num_dense": {"type": "int", "settings": {"name": "num_dense", "low": 1, "high": 4}},
}


class Recording(BaseObjective):
    def __init__(self, study, config, metric="val_loss", device="cpu"):
        BaseObjective.__init__(self, study, config, metric, device)
        self.seen: list[dict] = []

    def train(self, trial, conf):
        self.seen.append(conf)
        return {"val_loss": conf["optimizer"]["learning_rate"], "note": "ok"}


def _objective(custom_updates=None) -> Recording:
    obj = Recording(None, MODEL)
    obj.search_space, problems = SearchSpace.from_parameters_section(PARAMETERS)
    assert problems == []
    obj.optuna_section = {"parameters": PARAMETERS, "metric": "val_loss"}
    obj.custom_updates = custom_updates
    return obj


def test_call_applies_trial_values_to_a_deep_copy_and_copies_the_optuna_section():
    obj = _objective()
    value = obj(optuna.trial.FixedTrial({"lr": 0.01, "num_dense": 2}))
    assert value == 0.01
    conf = obj.seen[0]
    assert conf["optimizer"]["learning_rate"] == 0.01
    assert conf["optuna"]["parameters"] == PARAMETERS
    assert MODEL["optimizer"]["learning_rate"] == 0.1, "the model config itself is never changed"


def test_custom_updates_runs_after_automatic_updates():
    def custom_updates(trial, conf):
        n = trial.suggest_int("num_dense", 1, 4)
        conf["model"]["layers"] = [conf["optimizer"]["learning_rate"]] * n
        return conf

    obj = _objective(custom_updates)
    obj(optuna.trial.FixedTrial({"lr": 0.5, "num_dense": 3}))
    assert obj.seen[0]["model"]["layers"] == [0.5, 0.5, 0.5]


def test_results_are_recorded_on_the_trial():
    study = optuna.create_study()
    trial = study.ask()
    _objective()(trial)
    assert trial.user_attrs["record"]["results"]["note"] == "ok"


@pytest.mark.parametrize(
    ("results", "message"),
    [
        ({"loss": 1.0}, "train() returned no 'val_loss'"),
        ({"val_loss": float("nan")}, "val_loss=nan, which is not finite"),
        ({"val_loss": math.inf}, "val_loss=inf, which is not finite"),
        ({"val_loss": "0.3"}, "val_loss='0.3', which is not a number"),
        ({"val_loss": True}, "which is not a number"),
        ([0.3], "train() returned list, not a dict"),
    ],
)
def test_bad_results_name_the_problem(results, message):
    with pytest.raises(TrialResultError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_results(results, ["val_loss"])


def test_multi_objective_returns_values_in_metric_order():
    assert check_results({"acc": 0.9, "loss": 0.2}, ["loss", "acc"]) == [0.2, 0.9]


def test_echo_opt_signature_works(tmp_path: Path):
    (tmp_path / "objective.py").write_text(
        "from aimlutils.hyper_opt.base_objective import *\n"
        "class Objective(BaseObjective):\n"
        "    def __init__(self, config, metric='val_loss'):\n"
        "        BaseObjective.__init__(self, config, metric)\n"
        "    def train(self, trial, conf):\n"
        "        return {self.metric: 1.0}\n"
    )
    module = import_objective_module(tmp_path / "objective.py")
    obj = build_objective(module, {"study": None, "config": MODEL, "metric": "acc", "device": "cpu"})
    assert obj.config == MODEL and obj.metric == "acc"
    assert obj(optuna.trial.FixedTrial({})) == 1.0


def test_star_import_gives_base_objective_and_optuna():
    namespace: dict = {}
    exec("from aimlutils.hyper_opt.base_objective import *", namespace)
    assert namespace["BaseObjective"] is BaseObjective
    assert namespace["optuna"] is optuna


def test_keras_pruning_callback_imports_without_keras():
    from aimlutils.hyper_opt.utils import KerasPruningCallback  # noqa: F401

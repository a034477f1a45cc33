"""Inline ``{hyper_opt: ...}`` markers in the model config."""

from __future__ import annotations

import copy
import csv
import textwrap
from typing import Any

import optuna
import pytest
import yaml
from optuna.distributions import IntDistribution

from aimlutils.hyper_opt.base_objective import BaseObjective
from aimlutils.hyper_opt.config import ConfigError, check_config, load_config
from aimlutils.hyper_opt.search_space import SearchSpace
from aimlutils.hyper_opt.search_space.markers import parameters_from_markers
from aimlutils.hyper_opt.storage import open_storage
from tests.conftest import run_optimize


def marker(suggest: str = "int", **body: Any) -> dict[str, Any]:
    params = body.pop("params", {"low": 2, "high": 8, "step": 2})
    return {"hyper_opt": {"suggest": suggest, "params": params, **body}}


def seed_000_model(heads: Any = 4) -> dict[str, Any]:
    """The issue's example: the hidden size is a multiple of the number of heads."""
    hidden = marker(depends_on="model.num_transformer_heads", dependency="multiply")
    return {
        "model": {"transformer_hidden_size": hidden, "num_transformer_heads": heads},
        "optimizer": {"learning_rate": 0.001},
    }


def problems_of(model: dict[str, Any], study_files: Any, **optuna_section: Any) -> list[str]:
    hyper_path, _ = study_files(**optuna_section)
    hyper = yaml.safe_load(hyper_path.read_text())
    with pytest.raises(ConfigError) as info:
        check_config(hyper, model, hyper_path.parent)
    return [str(p) for p in info.value.problems]


def test_marker_becomes_a_parameter_named_by_its_dotted_path():
    params, problems = parameters_from_markers(seed_000_model())
    assert problems == []
    (hidden,) = params
    assert hidden.name == "model.transformer_hidden_size"
    assert hidden.target == ("model", "transformer_hidden_size")
    assert hidden.distribution == IntDistribution(2, 8, step=2)
    assert hidden.scale_by == ("model", "num_transformer_heads")


def test_dependency_order_is_resolved_whatever_the_file_order():
    # The dependent marker comes first in the file; the heads marker must still be applied first.
    model = seed_000_model(heads=marker(params={"low": 1, "high": 4}))
    params, problems = parameters_from_markers(model)
    assert problems == []
    assert [p.name for p in params] == ["model.num_transformer_heads", "model.transformer_hidden_size"]
    conf = copy.deepcopy(model)
    space = SearchSpace(tuple(params))
    space.apply(conf, {"model.num_transformer_heads": 3, "model.transformer_hidden_size": 6})
    assert conf["model"] == {"transformer_hidden_size": 18, "num_transformer_heads": 3}
    assert space.applied_values(conf) == {"model.transformer_hidden_size": 18}


def test_update_config_gives_a_marker_free_config_and_records_the_applied_value():
    params, _ = parameters_from_markers(seed_000_model())
    objective = BaseObjective(None, seed_000_model())
    objective.search_space = SearchSpace(tuple(params))
    study = optuna.create_study()
    trial = study.ask({"model.transformer_hidden_size": IntDistribution(2, 8, step=2)})
    conf = objective.update_config(trial)
    suggested = trial.params["model.transformer_hidden_size"]
    assert conf["model"]["transformer_hidden_size"] == suggested * 4
    assert trial.user_attrs["applied"] == {"model.transformer_hidden_size": suggested * 4}
    assert "hyper_opt" not in yaml.safe_dump(conf)


@pytest.mark.parametrize(
    ("model", "path", "words"),
    [
        (
            {"a": marker(depends_on="b"), "b": marker(depends_on="a")},
            "a.hyper_opt.depends_on",
            "cycle: a -> b -> a",
        ),
        ({"a": marker(depends_on="a")}, "a.hyper_opt.depends_on", "cycle: a -> a"),
        ({"a": marker(depends_on="model.nope")}, "a.hyper_opt.depends_on", "neither a marker nor"),
        ({"a": marker(depends_on="b"), "b": "wide"}, "a.hyper_opt.depends_on", "needs a number"),
        ({"a": marker(suggest="normal")}, "a.hyper_opt.suggest", "allowed: categorical"),
        ({"a": {"hyper_opt": {"params": {}}}}, "a.hyper_opt.suggest", "required key is missing"),
        ({"a": marker(sugest="int")}, "a.hyper_opt.sugest", "unknown key"),
        ({"a": marker(params={"low": 9, "high": 1})}, "a.hyper_opt.params.low", "greater than high"),
        ({"a": marker(params={"low": 1, "hihg": 2})}, "a.hyper_opt.params.hihg", "unknown key"),
        ({"a": marker(params={"low": 1, "high": 2, "name": "x"})}, "a.hyper_opt.params.name", "key path"),
        ({"a": marker(depends_on="b", dependency="add"), "b": 2}, "a.hyper_opt.dependency", "multiply"),
        ({"a": {**marker(), "low": 1}}, "a", "only 'hyper_opt'"),
    ],
)
def test_marker_problems_carry_their_key_paths(model, path, words):
    _, problems = parameters_from_markers(model)
    assert any(p.path == path and words in p.message for p in problems), problems


def test_cycle_and_dangling_depends_on_are_config_errors(study_files):
    model = seed_000_model(heads=marker(depends_on="model.transformer_hidden_size"))
    found = problems_of(model, study_files)
    cycle = "model.transformer_hidden_size.hyper_opt.depends_on: depends_on forms a cycle"
    assert any(p.startswith(cycle) for p in found), found
    model = seed_000_model()
    model["model"]["transformer_hidden_size"]["hyper_opt"]["depends_on"] = "model.num_heads"
    found = problems_of(model, study_files)
    assert any(
        p.startswith("model.transformer_hidden_size.hyper_opt.depends_on: 'model.num_heads'") for p in found
    )


def test_a_parameter_defined_as_marker_and_in_the_section_is_an_error(study_files):
    model = seed_000_model()
    model["optimizer"]["learning_rate"] = marker("float", params={"low": 0.0, "high": 1.0})
    found = problems_of(model, study_files)  # optuna.parameters also has optimizer:learning_rate
    assert any(
        p.startswith("optimizer.learning_rate.hyper_opt: also defined as optuna.parameters") for p in found
    )


OBJECTIVE = textwrap.dedent(
    """
    from aimlutils.hyper_opt.base_objective import *

    class Objective(BaseObjective):
        def train(self, trial, conf):
            assert "hyper_opt" not in str(conf)
            m = conf["model"]
            hidden, heads = m["transformer_hidden_size"], m["num_transformer_heads"]
            return {"val_loss": float(hidden), "hidden_seen": hidden, "heads_seen": heads}
    """
)


@pytest.mark.parametrize("heads", [4, marker(params={"low": 1, "high": 4})], ids=["fixed", "tuned"])
def test_seed_000_example_runs_locally(study_files, heads):
    hyper_path, model_path = study_files(n_trials=4)
    (hyper_path.parent / "objective.py").write_text(OBJECTIVE)
    model_path.write_text(yaml.safe_dump(seed_000_model(heads), sort_keys=False))
    proc = run_optimize(hyper_path, model_path, "--local", "--workers", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cfg = load_config(hyper_path, model_path, base_dir=hyper_path.parent)
    study = optuna.load_study(study_name=cfg.study_name, storage=open_storage(cfg.storage))
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 4
    for t in trials:
        results = t.user_attrs["record"]["results"]
        head_count = t.params.get("model.num_transformer_heads", 4)
        assert results["heads_seen"] == head_count
        assert results["hidden_seen"] == t.params["model.transformer_hidden_size"] * head_count
        assert t.user_attrs["applied"] == {"model.transformer_hidden_size": results["hidden_seen"]}
    with open(cfg.csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert all(row["applied.model.transformer_hidden_size"] == row["hidden_seen"] for row in rows)

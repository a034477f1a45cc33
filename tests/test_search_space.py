"""Parameter types become the right Optuna distributions, and values land at their colon paths."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from aimlutils.hyper_opt.search_space import SearchSpace, suggest_from_spec


def _space(parameters: dict) -> SearchSpace:
    space, problems = SearchSpace.from_parameters_section(parameters)
    assert problems == []
    return space


@pytest.mark.parametrize(
    ("kind", "settings", "expected"),
    [
        ("int", {"low": 0, "high": 10}, IntDistribution(0, 10)),
        ("int", {"low": 16, "high": 128, "step": 16}, IntDistribution(16, 128, step=16)),
        ("int", {"low": 1, "high": 1024, "log": True}, IntDistribution(1, 1024, log=True)),
        ("float", {"low": 0.0, "high": 0.5}, FloatDistribution(0.0, 0.5)),
        ("float", {"low": 0.0, "high": 1.0, "step": 0.1}, FloatDistribution(0.0, 1.0, step=0.1)),
        ("float", {"low": 1e-5, "high": 1e-1, "log": True}, FloatDistribution(1e-5, 1e-1, log=True)),
        ("uniform", {"low": -1.0, "high": 1.0}, FloatDistribution(-1.0, 1.0)),
        ("loguniform", {"low": 1e-7, "high": 1e-2}, FloatDistribution(1e-7, 1e-2, log=True)),
        ("discrete_uniform", {"low": 0.0, "high": 1.0, "q": 0.25}, FloatDistribution(0.0, 1.0, step=0.25)),
        ("categorical", {"choices": ["relu", "tanh", None]}, CategoricalDistribution(["relu", "tanh", None])),
    ],
)
def test_each_parameter_type_maps_to_its_optuna_distribution(kind, settings, expected):
    space = _space({"key": {"type": kind, "settings": {"name": "p", **settings}}})
    assert space.distributions == {"p": expected}


def test_discrete_uniform_with_quarter_step_stays_float():
    space = _space(
        {"x": {"type": "discrete_uniform", "settings": {"name": "x", "low": 0, "high": 2, "q": 0.25}}}
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    values = [space.suggest(study.ask())["x"] for _ in range(20)]
    assert all(isinstance(v, float) and (v * 4).is_integer() for v in values)
    assert any(not v.is_integer() for v in values)


def test_name_defaults_to_the_key_when_settings_has_none():
    space = _space({"dropout": {"type": "float", "settings": {"low": 0.0, "high": 0.5}}})
    assert list(space.distributions) == ["dropout"]


def test_colon_path_writes_the_nested_value_and_plain_key_the_top_level():
    space = _space(
        {
            "optimizer:learning_rate": {
                "type": "loguniform",
                "settings": {"name": "lr", "low": 1e-5, "high": 1e-2},
            },
            "epochs": {"type": "int", "settings": {"name": "epochs", "low": 1, "high": 5}},
        }
    )
    conf = {"optimizer": {"learning_rate": 0.1, "type": "adam"}, "epochs": 1}
    space.apply(conf, {"lr": 0.003, "epochs": 4})
    assert conf == {"optimizer": {"learning_rate": 0.003, "type": "adam"}, "epochs": 4}


def test_deep_colon_path():
    space = _space({"a:b:c": {"type": "int", "settings": {"name": "c", "low": 0, "high": 3}}})
    conf = {"a": {"b": {"c": 0, "d": 1}}}
    assert space.apply(conf, {"c": 2}) == {"a": {"b": {"c": 2, "d": 1}}}


def test_keys_missing_from_the_model_config_are_left_for_custom_updates():
    space = _space(
        {
            "num_dense": {"type": "int", "settings": {"name": "num_dense", "low": 0, "high": 10}},
            "optimizer:momentum": {"type": "float", "settings": {"name": "m", "low": 0.0, "high": 1.0}},
            "optimizer:learning_rate": {"type": "float", "settings": {"name": "lr", "low": 0.0, "high": 1.0}},
        }
    )
    conf = {"optimizer": {"learning_rate": 0.1}}
    assert [p.name for p in space.unplaced(conf)] == ["num_dense", "m"]
    space.apply(conf, {"num_dense": 3, "m": 0.9, "lr": 0.5})
    assert conf == {"optimizer": {"learning_rate": 0.5}}


def test_colon_path_through_a_non_mapping_is_a_problem():
    space = _space(
        {"optimizer:learning_rate:x": {"type": "float", "settings": {"name": "lr", "low": 0, "high": 1}}}
    )
    problems = space.check_targets({"optimizer": {"learning_rate": 0.1}})
    assert len(problems) == 1
    assert problems[0].path == "optuna.parameters.optimizer:learning_rate:x"
    assert (
        "'optimizer.learning_rate' in the model config is 0.1 (float), not a mapping" in problems[0].message
    )


def test_suggest_from_spec_reads_a_parameters_entry():
    trial = optuna.trial.FixedTrial({"num_dense": 3})
    spec = {"type": "int", "settings": {"name": "num_dense", "low": 0, "high": 10}}
    assert suggest_from_spec(trial, spec) == 3


def test_suggest_is_repeatable_within_a_trial():
    space = _space({"x": {"type": "float", "settings": {"name": "x", "low": 0, "high": 1}}})
    trial = optuna.create_study().ask()
    assert space.suggest(trial) == space.suggest(trial)

"""Value modes, grids from the parameters, and stopping at a target."""

from __future__ import annotations

import math

import pytest
from optuna.trial import TrialState

from aimlutils.hyper_opt.config import ConfigError, load_config
from aimlutils.hyper_opt.search_space.value_modes import expand_values
from tests.test_local_run import load_study, optimize


def values(kind: str, **settings: object) -> list:
    _, out, problems = expand_values(kind, settings, "p.settings")
    assert problems == [], problems
    assert out is not None
    return out


def problems(kind: str, **settings: object) -> list[str]:
    return [str(p) for p in expand_values(kind, settings, "optuna.parameters.x.settings")[2]]


def test_multiple_keeps_the_values_as_given():
    assert values("multiple", values=[1, 0.5, "relu", True]) == [1, 0.5, "relu", True]


def test_linear_is_evenly_spaced_with_exact_ends():
    assert values("linear", start=0.0, stop=1.0, count=11) == [i / 10 for i in range(11)]
    assert values("linear", start=16, stop=64, count=4) == [16, 32, 48, 64]
    assert all(isinstance(v, int) for v in values("linear", start=16, stop=64, count=4))
    assert values("linear", start=1, stop=2, count=3) == [1.0, 1.5, 2.0]
    assert values("linear", start=5, stop=9, count=1) == [5]


def test_logspace_is_base_to_the_evenly_spaced_exponents():
    assert values("logspace", start=-4, stop=-1, count=4) == [1e-4, 1e-3, 1e-2, 1e-1]
    assert values("logspace", base=2, start=3, stop=6, count=4) == [8.0, 16.0, 32.0, 64.0]


def test_random_is_sorted_in_range_and_the_same_in_every_process():
    uni = values("random", distribution="uniform", low=0.1, high=0.5, count=5, seed=3)
    assert uni == sorted(uni) and all(0.1 <= v <= 0.5 for v in uni) and len(set(uni)) == 5
    assert uni == values("random", distribution="uniform", low=0.1, high=0.5, count=5, seed=3)
    log = values("random", distribution="loguniform", low=1e-5, high=1e-1, count=4)
    assert all(1e-5 <= v <= 1e-1 for v in log)
    ints = values("random", distribution="int", low=1, high=6, count=6)
    assert ints == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    ("kind", "settings", "expected"),
    [
        ("linear", {"start": 0, "stop": 1, "count": 0}, "optuna.parameters.x.settings.count: got 0;"),
        (
            "logspace",
            {"start": 1, "stop": 1, "count": 3},
            "optuna.parameters.x.settings.stop: got 1.0, equal",
        ),
        (
            "logspace",
            {"start": 1, "stop": 2, "count": 3, "base": 1},
            "optuna.parameters.x.settings.base: got 1",
        ),
        ("multiple", {"values": []}, "optuna.parameters.x.settings.values: got []"),
        ("multiple", {"values": [1, 2, 1]}, "optuna.parameters.x.settings.values.2: 1 is listed twice"),
        ("linear", {"start": 0, "count": 2}, "optuna.parameters.x.settings.stop: required key is missing"),
        (
            "linear",
            {"start": 0, "stop": 1, "count": 2, "num": 3},
            "optuna.parameters.x.settings.num: unknown key",
        ),
        (
            "random",
            {"distribution": "normal", "low": 0, "high": 1, "count": 2},
            "optuna.parameters.x.settings.distribution: got 'normal'",
        ),
        (
            "random",
            {"distribution": "uniform", "low": 1, "high": 0, "count": 2},
            "optuna.parameters.x.settings.low: low (1.0) must be less than high (0.0)",
        ),
        (
            "random",
            {"distribution": "loguniform", "low": 0, "high": 1, "count": 2},
            "optuna.parameters.x.settings.low: got 0.0; loguniform needs low > 0",
        ),
        (
            "random",
            {"distribution": "int", "low": 1, "high": 3, "count": 4},
            "optuna.parameters.x.settings.count: got 4; only 3 distinct integers",
        ),
    ],
)
def test_bad_value_modes_name_key_value_and_rule(kind, settings, expected):
    found = problems(kind, **settings)
    assert any(p.startswith(expected) for p in found), found


def grid_parameters(**extra: dict) -> dict:
    return {
        "optimizer:learning_rate": {
            "type": "multiple",
            "settings": {"name": "lr", "values": [0.1, 0.3, 0.5]},
        },
        "optimizer:weight_decay": {
            "type": "logspace",
            "settings": {"name": "wd", "start": -4, "stop": -1, "count": 4},
        },
        **extra,
    }


def test_a_float_range_in_a_grid_is_a_config_error(study_files):
    hyper, model = study_files(
        sampler={"type": "GridSampler"},
        parameters=grid_parameters(
            dropout={"type": "float", "settings": {"name": "dr", "low": 0.0, "high": 0.5}}
        ),
    )
    with pytest.raises(ConfigError) as err:
        load_config(hyper, model)
    assert "optuna.parameters.dropout: parameter 'dr' is a float range without step" in str(err.value)
    assert "give it a step" in str(err.value)


def test_a_stepped_range_is_enumerated_in_a_grid(study_files, tmp_path):
    hyper, model = study_files(
        sampler={"type": "GridSampler"},
        parameters={
            "optimizer:learning_rate": {
                "type": "float",
                "settings": {"name": "lr", "low": 0, "high": 1, "step": 0.25},
            },
            "trainer:epochs": {"type": "int", "settings": {"name": "epochs", "low": 1, "high": 3}},
        },
        n_trials=100,
    )
    out = optimize(hyper, model, "--workers", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Grid: 15 combinations" in out.stdout
    assert "optuna.n_trials is 100, more than the grid has: running 15 trials" in out.stdout
    # Each of the 15 combinations ran exactly once (a set would hide a duplicate).
    params = sorted((t.params["lr"], t.params["epochs"]) for t in load_study(hyper, model).get_trials())
    assert params == [(lr, epochs) for lr in (0.0, 0.25, 0.5, 0.75, 1.0) for epochs in (1, 2, 3)]


def test_target_with_several_metrics_is_a_config_error(study_files):
    hyper, model = study_files(metric=["val_loss", "lr_seen"], direction=["minimize", "minimize"], target=0.1)
    with pytest.raises(ConfigError) as err:
        load_config(hyper, model)
    assert "optuna.target: got 0.1 with 2 metrics" in str(err.value)


def test_grid_of_3_by_4_runs_12_distinct_trials_with_4_workers(study_files):
    hyper, model = study_files(sampler={"type": "GridSampler"}, parameters=grid_parameters(), n_trials=12)
    out = optimize(hyper, model, "--workers", "4")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if "12 combinations" in line)
    assert first < next(i for i, line in enumerate(lines) if line.startswith("Starting study"))
    trials = load_study(hyper, model).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 12
    seen = {(t.params["lr"], t.params["wd"]) for t in trials}
    assert seen == {(lr, wd) for lr in (0.1, 0.3, 0.5) for wd in (1e-4, 1e-3, 1e-2, 1e-1)}


def test_target_stops_every_worker_after_the_trial_that_reached_it(study_files):
    lrs = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.31, 0.2, 0.1, 0.0, 0.95, 0.85, 0.75, 0.65, 0.55, 0.45]
    hyper, model = study_files(
        sampler={"type": "GridSampler"},
        parameters={
            "optimizer:learning_rate": {"type": "multiple", "settings": {"name": "lr", "values": lrs}}
        },
        n_trials=len(lrs),
        target=0.001,  # (0.31 - 0.3) ** 2 = 1e-4 reaches it; nothing before it does
        test={"sleep": 0.3},
    )
    out = optimize(hyper, model, "--workers", "4")
    assert out.returncode == 0, out.stdout + out.stderr
    # The grid's unstarted points stay queued (WAITING), with no start time.
    trials = [t for t in load_study(hyper, model).get_trials() if t.datetime_start is not None]
    reaching = [t for t in trials if t.value is not None and t.value <= 0.001]
    first = min(reaching, key=lambda t: t.datetime_complete)
    assert f"Target 0.001 met by trial {first.number}" in out.stdout
    assert [t.number for t in trials if t.datetime_start > first.datetime_complete] == []
    assert len(trials) < len(lrs)
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert math.isclose(first.params["lr"], 0.31)

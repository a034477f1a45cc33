"""Command-line overrides: ``key=value`` and Hydra-style sweeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from aimlutils.hyper_opt.config import ConfigError, load_config
from aimlutils.hyper_opt.search_space.overrides import OverrideSyntaxError, parse_override
from tests.conftest import run_optimize

FOUR_FORMS = [
    "optimizer:learning_rate=interval(1e-5, 1e-3)",
    "model:act=choice(relu, tanh)",
    "trainer:batch=range(16, 128, step=16)",
    "optimizer:weight_decay=tag(log, interval(1e-6, 1e-2))",
]


def model_file(path: Path) -> Path:
    data = yaml.safe_load(path.read_text())
    data["model"]["act"] = "relu"
    data["trainer"]["batch"] = 32
    path.write_text(yaml.safe_dump(data))
    return path


def distributions(study_files: Any, *overrides: str) -> dict[str, Any]:
    hyper, model = study_files()
    cfg = load_config(hyper, model_file(model), hyper.parent, overrides=overrides)
    return cfg.space.distributions


def test_the_four_sweep_forms_give_their_optuna_distributions(study_files):
    dists = distributions(study_files, *FOUR_FORMS)
    # Replacing optimizer:learning_rate keeps the name the parameters section gave it.
    assert dists["lr"] == FloatDistribution(1e-5, 1e-3)
    assert dists["model:act"] == CategoricalDistribution(["relu", "tanh"])
    # range() includes its stop, as the Hydra Optuna sweeper's (Optuna's bounds): 16, 32, ..., 128.
    assert dists["trainer:batch"] == IntDistribution(16, 128, step=16)
    assert dists["optimizer:weight_decay"] == FloatDistribution(1e-6, 1e-2, log=True)


@pytest.mark.parametrize(
    ("text", "kind", "settings"),
    [
        ("a=range(0, 10)", "int", {"low": 0, "high": 10, "step": 1}),
        # A stop off the step grid is lowered to the last grid point, as Optuna does.
        ("a=range(16, 129, 16)", "int", {"low": 16, "high": 128, "step": 16}),
        ("a=range(0, 1, step=0.25)", "float", {"low": 0, "high": 1.0, "step": 0.25}),
        ("a=tag(log, int(interval(1, 100)))", "int", {"low": 1, "high": 100, "log": True}),
        ("a=interval(0, 1)", "float", {"low": 0, "high": 1}),
        ("a=choice( 1, 2.5, true, 'x, y' , null)", "categorical", {"choices": [1, 2.5, True, "x, y", None]}),
    ],
)
def test_sweep_settings(text, kind, settings):
    override = parse_override(text)
    assert (override.kind, override.settings) == (kind, settings)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("a=1e-3", 0.001),
        ("a=16", 16),
        ("a=relu", "relu"),
        ("a=true", True),
        ("a=[1, 2]", [1, 2]),
        ("a=", None),
    ],
)
def test_plain_values_are_numbers_or_yaml(text, value):
    assert parse_override(text).value == value


def test_plain_values_fix_the_model_config_and_set_hyper_yml(study_files):
    hyper, model = study_files()
    overrides = ["optimizer:learning_rate=0.01", "trainer.epochs=3", "optuna.n_trials=50"]
    cfg = load_config(hyper, model, hyper.parent, overrides=overrides)
    assert cfg.model["optimizer"]["learning_rate"] == 0.01
    assert cfg.model["trainer"]["epochs"] == 3
    assert cfg.optuna.n_trials == 50 and cfg.hyper["optuna"]["n_trials"] == 50
    # A fixed value is not overwritten by the parameter that used to sit there.
    assert "lr" not in cfg.space.distributions


def test_a_sweep_at_a_marker_replaces_how_it_is_drawn_and_keeps_depends_on(study_files):
    hyper, model = study_files()
    data = yaml.safe_load(model.read_text())
    data["model"]["heads"] = 4
    data["model"]["hidden"] = {
        "hyper_opt": {"suggest": "int", "params": {"low": 1, "high": 2}, "depends_on": "model.heads"}
    }
    model.write_text(yaml.safe_dump(data))
    cfg = load_config(hyper, model, hyper.parent, overrides=["model.hidden=range(2, 10, step=2)"])
    (hidden,) = [p for p in cfg.space.parameters if p.name == "model.hidden"]
    assert hidden.distribution == IntDistribution(2, 10, step=2)
    assert hidden.scale_by == ("model", "heads")


@pytest.mark.parametrize(
    ("text", "reason", "caret_at"),
    [
        (
            "optimizer:lr=interval(1e-5, 1e-3",
            "expected ')', found the end",
            len("optimizer:lr=interval(1e-5, 1e-3"),
        ),
        ("model:act=choice(relu,, tanh)", "expected a value", len("model:act=choice(relu,")),
        ("trainer:batch=range(16, big)", "expected a number, found 'big'", len("trainer:batch=range(16, ")),
        ("w=tag(lg, interval(1, 2))", "unknown tag 'lg'", len("w=tag(")),
        ("w=interval(1, 2) extra", "unexpected text after the sweep", len("w=interval(1, 2) ")),
        ("w=range(10, 1)", "is empty", len("w=")),
        # The sweeper ignores tags on range(); refused rather than drawn differently.
        ("w=tag(log, range(1, 100))", "ignores it and draws uniformly", len("w=tag(log, ")),
        ("no equals sign", "expected key=value", len("no")),
    ],
)
def test_malformed_overrides_point_at_where_parsing_stopped(text, reason, caret_at):
    with pytest.raises(OverrideSyntaxError) as info:
        parse_override(text)
    assert reason in info.value.reason
    assert info.value.position == caret_at
    lines = str(info.value).splitlines()
    assert lines[1].strip() == text and lines[2].index("^") - lines[1].index(text[0]) == caret_at


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("optimizer:learning_rate=interval(1e-3, 1e-5)", "greater than high"),
        ("optimizer:wd=tag(log, interval(0, 1))", "low > 0"),
        ("optimizer:lernrate=0.1", "not in the model config"),
        ("optuna.n_trials=choice(1, 2)", "takes a plain value"),
        ("optuna.n_trials=-1", "optuna.n_trials"),  # checked by the schema like the file's own value
    ],
)
def test_override_problems_are_config_errors(study_files, override, words):
    hyper, model = study_files()
    with pytest.raises(ConfigError) as info:
        load_config(hyper, model, hyper.parent, overrides=[override])
    assert words in str(info.value)


def test_optimize_py_runs_with_overrides_and_workers_see_them(study_files):
    hyper, model = study_files(n_trials=2)
    args = ["optuna.n_trials=3", "optimizer:learning_rate=interval(0.25, 0.5)"]
    proc = run_optimize(hyper, model, *args, "--local", "--workers", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    saved = load_config(
        hyper.parent / "results/configs/hyper.yml", hyper.parent / "results/configs/model.yml"
    )
    assert saved.optuna.n_trials == 3
    rows = (hyper.parent / "results/trial_results.csv").read_text().splitlines()
    assert len(rows) == 4  # header + 3 trials
    assert saved.space.distributions["lr"] == FloatDistribution(0.25, 0.5)


def test_malformed_override_on_the_command_line_exits_2_with_a_caret(study_files):
    hyper, model = study_files()
    bad = "model:act=choice(relu, tanh"
    proc = run_optimize(hyper, model, bad, "--local")
    assert proc.returncode == 2
    assert "the command line has 1 problem" in proc.stderr
    assert f"override {bad!r}: expected ')', found the end" in proc.stderr
    lines = proc.stderr.splitlines()
    text_line = next(line for line in lines if line.strip() == bad)
    caret_line = lines[lines.index(text_line) + 1]
    assert caret_line.index("^") == text_line.index(bad) + len(bad)

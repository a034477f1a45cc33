"""Every mistake in hyper.yml is reported at once, with its key path, and nothing is started."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from aimlutils.hyper_opt.cli import main
from tests.conftest import MODEL, OBJECTIVE, hyper_config

ROOT = Path(__file__).resolve().parents[1]


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        data = data.setdefault(key, {})
    if value is _DELETE:
        del data[last]
    else:
        data[last] = value


_DELETE = object()

# (what to change as {dotted path: value}, the key path reported, a fragment of the message)
CASES = [
    ({"optuan": {}}, "optuan", "unknown key (did you mean 'optuna'?)"),
    ({"optuna.n_trial": 5}, "optuna.n_trial", "did you mean 'n_trials'?"),
    ({"optuna.n_trials": "many"}, "optuna.n_trials", "got 'many'; input should be a valid integer"),
    ({"optuna.n_trials": 0}, "optuna.n_trials", "greater than or equal to 1"),
    ({"optuna.gpu_hours": 10}, "optuna.gpu_hours", "with optuna.gpu false: trials on CPUs use no GPU-hours"),
    ({"optuna.trial_timeout_s": 0}, "optuna.trial_timeout_s", "greater than 0"),
    ({"optuna.checkpoints.keep_best": -1}, "optuna.checkpoints.keep_best", "greater than or equal to 0"),
    ({"optuna.readable_by": "world"}, "optuna.readable_by", "'user' or 'group'"),
    ({"optuna.direction": "minimise"}, "optuna.direction", "'minimize' or 'maximize'"),
    (
        {"optuna.metric": ["val_loss", "acc"]},
        "optuna.direction",
        "got 1 direction(s) ['minimize'] for 2 metric(s)",
    ),
    (
        {"optuna.parameters.dropout": {"type": "float", "settings": {"name": "dr", "low": 0.9, "high": 0.5}}},
        "optuna.parameters.dropout.settings.low",
        "low (0.9) is greater than high (0.5)",
    ),
    (
        {"optuna.parameters.dropout": {"type": "float", "settings": [0, 1]}},
        "optuna.parameters.dropout.settings",
        "got [0, 1]; settings is a mapping",
    ),
    (
        {"optuna.parameters.optimizer::lr": {"type": "float", "settings": {"low": 0, "high": 1}}},
        "optuna.parameters.optimizer::lr",
        "a colon path has an empty part",
    ),
    (
        {"optuna.proxy": True},
        "optuna.proxy",
        "the storage proxy fronts PostgreSQL or MySQL",
    ),
    (
        {"optuna.parameters.dropout": {"type": "floaty", "settings": {"low": 0, "high": 1}}},
        "optuna.parameters.dropout.type",
        "got 'floaty'; allowed types: categorical, discrete_uniform, float, int",
    ),
    (
        {"optuna.parameters.dropout": {"type": "float", "settings": {"lo": 0, "high": 1}}},
        "optuna.parameters.dropout.settings.lo",
        "unknown key (did you mean 'low'?)",
    ),
    (
        {"optuna.parameters.dropout": {"type": "float", "settings": {"low": 0}}},
        "optuna.parameters.dropout.settings.high",
        "required key is missing",
    ),
    (
        {"optuna.parameters.num_dense": {"type": "int", "settings": {"low": 0.5, "high": 4}}},
        "optuna.parameters.num_dense.settings.low",
        "got 0.5",
    ),
    (
        {"optuna.parameters.lr2": {"type": "loguniform", "settings": {"low": 0.0, "high": 0.1}}},
        "optuna.parameters.lr2.settings.low",
        "a log-scaled range needs low > 0",
    ),
    (
        {
            "optuna.parameters.wd": {
                "type": "float",
                "settings": {"low": 0.1, "high": 1.0, "step": 0.1, "log": True},
            }
        },
        "optuna.parameters.wd.settings.step",
        "use either step or log",
    ),
    (
        {"optuna.parameters.act": {"type": "categorical", "settings": {"choices": []}}},
        "optuna.parameters.act.settings.choices",
        "at least 1 item",
    ),
    (
        {
            "optuna.parameters.optimizer:learning_rate:x": {
                "type": "float",
                "settings": {"name": "x", "low": 0, "high": 1},
            }
        },
        "optuna.parameters.optimizer:learning_rate:x",
        "'optimizer.learning_rate' in the model config is 0.001 (float), not a mapping",
    ),
    (
        {
            "optuna.parameters.trainer:epochs": {
                "type": "int",
                "settings": {"name": "lr", "low": 1, "high": 3},
            }
        },
        "optuna.parameters.trainer:epochs.settings.name",
        "'lr' is already the name of parameter 'optimizer:learning_rate'",
    ),
    (
        {"optuna.sampler": {"type": "TPESampeler"}},
        "optuna.sampler.type",
        "got 'TPESampeler'; allowed samplers: BruteForceSampler",
    ),
    (
        {"optuna.sampler": {"type": "TPESampler", "n_startup": 5}},
        "optuna.sampler.n_startup",
        "TPESampler has no argument 'n_startup'; allowed: consider_prior",
    ),
    ({"optuna.pruner": {"type": "MedianPrunner"}}, "optuna.pruner.type", "allowed pruners: HyperbandPruner"),
    (
        {"optuna.pruner": {"type": "MedianPruner", "n_startup_trials": -1}},
        "optuna.pruner",
        "MedianPruner(n_startup_trials=-1) was refused by Optuna",
    ),
    (
        {"optuna.pruner": {"type": "PatientPruner", "patience": 2}},
        "optuna.pruner.wrapped_pruner",
        "PatientPruner needs this argument",
    ),
    (
        {"optuna.objective": "nowhere/objective.py"},
        "optuna.objective",
        "file 'nowhere/objective.py' not found",
    ),
    ({"optuna.save_path": _DELETE}, "optuna.save_path", "required key is missing"),
    ({"optuna.name": _DELETE}, "optuna.name", "required key is missing"),
    ({"optuna.storage": "mongodb://db/x"}, "optuna.storage", "unknown storage URL scheme 'mongodb'"),
    (
        {"optuna.storage_type": "mongo"},
        "optuna.storage_type",
        "got 'mongo'; input should be 'sqlite', 'maria' or 'nfs'",
    ),
    ({"optuna.enqueue": [{"lrr": 0.1}]}, "optuna.enqueue.0.lrr", "not a parameter name; parameters: lr"),
    ({"optuna.enqueue": [{"lr": 7.0}]}, "optuna.enqueue.0.lr", "7.0 is outside FloatDistribution"),
    ({"optuna.gpu": "maybe"}, "optuna.gpu", "got 'maybe'; input should be a valid boolean"),
    ({"slurm": {"jobs": 1}, "pbs": {"jobs": 1}}, "pbs", "both slurm and pbs sections are given"),
    ({"slurm": {"jobz": 1}}, "slurm.jobz", "unknown key (did you mean 'jobs'?)"),
]


def _write(tmp_path: Path, changes: dict[str, Any]) -> tuple[Path, Path, Path]:
    (tmp_path / "objective.py").write_text(OBJECTIVE)
    save_path = tmp_path / "results"
    data = hyper_config(save_path, tmp_path / "objective.py")
    data = copy.deepcopy(data)
    for path, value in changes.items():
        if "." in path and path.startswith("optuna.parameters."):
            data["optuna"]["parameters"][path.removeprefix("optuna.parameters.")] = value
        else:
            _set(data, path, value)
    hyper, model = tmp_path / "hyper.yml", tmp_path / "model.yml"
    hyper.write_text(yaml.safe_dump(data))
    model.write_text(yaml.safe_dump(MODEL))
    return hyper, model, save_path


@pytest.mark.parametrize(("changes", "path", "fragment"), CASES, ids=[c[1] + ":" + c[2][:30] for c in CASES])
def test_invalid_config_names_key_path_and_exits_2(tmp_path, capsys, changes, path, fragment):
    hyper, model, save_path = _write(tmp_path, changes)
    assert main([str(hyper), str(model)]) == 2
    err = capsys.readouterr().err
    matching = [line for line in err.splitlines() if line.strip().startswith(f"- {path}:")]
    assert matching, err
    assert any(fragment in line for line in matching), err
    assert not save_path.exists(), "nothing is created for an invalid config"


def test_all_problems_are_reported_in_one_message(tmp_path, capsys):
    hyper, model, _ = _write(
        tmp_path,
        {
            "optuna.n_trials": -3,
            "optuna.sampler": {"type": "Nope"},
            "optuna.parameters.dropout": {"type": "float", "settings": {"low": 2, "high": 1}},
        },
    )
    assert main([str(hyper), str(model)]) == 2
    err = capsys.readouterr().err
    assert "hyper.yml has 3 problems:" in err
    for path in ("optuna.n_trials", "optuna.sampler.type", "optuna.parameters.dropout.settings.low"):
        assert f"- {path}:" in err


def test_objective_with_a_syntax_error_is_found_before_start(tmp_path, capsys):
    hyper, model, save_path = _write(tmp_path, {})
    (tmp_path / "objective.py").write_text("class Objective(:\n    pass\n")
    assert main([str(hyper), str(model)]) == 2
    assert "optuna.objective:" in capsys.readouterr().err
    assert not save_path.exists()


def test_objective_without_objective_class(tmp_path, capsys):
    hyper, model, _ = _write(tmp_path, {})
    (tmp_path / "objective.py").write_text("def train():\n    pass\n")
    assert main([str(hyper), str(model)]) == 2
    assert "defines no class Objective(BaseObjective)" in capsys.readouterr().err


def test_model_config_that_is_not_yaml(tmp_path, capsys):
    hyper, model, _ = _write(tmp_path, {})
    model.write_text("model: [unclosed\n")
    assert main([str(hyper), str(model)]) == 2
    assert "model.yml has 1 problem" in capsys.readouterr().err


def test_missing_hyper_file(tmp_path, capsys):
    assert main([str(tmp_path / "nope.yml"), str(tmp_path / "model.yml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_exit_code_2_from_the_command_line(tmp_path):
    hyper, model, save_path = _write(tmp_path, {"optuna.n_trials": 0})
    proc = subprocess.run(
        [sys.executable, str(ROOT / "optimize.py"), str(hyper), str(model)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "optuna.n_trials: got 0" in proc.stderr
    assert not save_path.exists()

"""A record to reproduce each trial, the report's copy of it, and ``optimize.py rerun``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from aimlutils.hyper_opt.config import load_config
from aimlutils.hyper_opt.objective.reproduce import config_id_of, git_state, read_config
from tests.conftest import ROOT, needs_module, run_optimize
from tests.test_local_run import load_study


def _command(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "optimize.py"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def _git(folder: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def test_each_trial_keeps_its_environment_config_and_seed_in_its_one_record(study_files, tmp_path):
    hyper, model = study_files(n_trials=6, test={"sleep": 0.5}, sampler={"type": "RandomSampler", "seed": 10})
    _git(tmp_path, "init", "-q")
    _git(
        tmp_path,
        "-c",
        "user.email=t@example.org",
        "-c",
        "user.name=t",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "x",
    )
    _git(tmp_path, "add", "objective.py")
    _git(tmp_path, "-c", "user.email=t@example.org", "-c", "user.name=t", "commit", "-q", "-m", "objective")
    proc = run_optimize(hyper, model, "--workers", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cfg = load_config(hyper, model, base_dir=tmp_path)
    study = load_study(hyper, model)
    seeds = set()
    for trial in study.trials:
        assert set(trial.user_attrs) == {"record"}  # still one attribute, written once
        repro = trial.user_attrs["record"]["repro"]
        seeds.add(repro["seed"])
        env = json.loads(cfg.paths.repro_env(repro["env"]).read_text())
        assert env["packages"]["optuna"] == __import__("optuna").__version__
        assert env["python"] == ".".join(map(str, sys.version_info[:3]))
        assert env["objective"]["path"] == str(tmp_path / "objective.py")
        assert env["objective"]["git"] == {
            "commit": _git(tmp_path, "rev-parse", "HEAD"),
            "dirty": False,
            "root": str(tmp_path),
        }
        conf = read_config(cfg.paths, repro["config"])
        assert conf is not None
        assert conf["optimizer"]["learning_rate"] == trial.params["lr"]  # as train received it
        assert config_id_of(conf) == repro["config"]
    assert seeds == {10, 11}  # each worker's sampler seed (the seed plus the worker's number)
    assert len(list(cfg.paths.repro.glob("env-*.json"))) == 1  # both workers: one environment
    assert len(list(cfg.paths.repro.glob("configs-*.jsonl"))) == 2  # a file per worker

    (tmp_path / "objective.py").write_text((tmp_path / "objective.py").read_text() + "\n# edited\n")
    assert git_state(tmp_path / "objective.py")["dirty"] is True


def test_the_report_writes_the_best_trials_record_next_to_best_yml(study_files, tmp_path):
    hyper, model = study_files(n_trials=4)
    assert run_optimize(hyper, model, "--workers", "1").returncode == 0
    proc = _command("report", str(hyper), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    best = load_study(hyper, model).best_trial
    assert f"reproduce/trial_{best.number}.yml" in proc.stdout
    record = yaml.safe_load((tmp_path / f"results/report/reproduce/trial_{best.number}.yml").read_text())
    assert record["trial"] == best.number and record["values"] == {"val_loss": best.value}
    assert record["params"] == best.params and record["state"] == "COMPLETE"
    assert record["model_config"]["optimizer"]["learning_rate"] == best.params["lr"]
    assert record["environment"]["packages"]["optuna"] and record["environment"]["objective"]["sha256"]
    assert record["ran"]["host"] and record["ran"]["pid"]
    assert record["rerun"].endswith(f"rerun {tmp_path / 'results/configs/hyper.yml'} {best.number}")


def test_rerun_of_the_best_trial_gives_its_value_back(study_files, tmp_path):
    hyper, model = study_files(n_trials=4, test={"steps": 2})
    assert run_optimize(hyper, model, "--workers", "2").returncode == 0
    best = load_study(hyper, model).best_trial
    proc = _command("rerun", str(hyper), str(best.number), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"Rerunning trial {best.number} of study" in proc.stdout
    assert f"val_loss: rerun {best.value:.6g}, stored {best.value:.6g}: the same" in proc.stdout
    assert len(load_study(hyper, model).trials) == 4  # the rerun is no trial of the study

    (tmp_path / "objective.py").write_text((tmp_path / "objective.py").read_text() + "\n# edited\n")
    again = _command("rerun", str(hyper), str(best.number), cwd=tmp_path)
    assert "objective.py changed since the trial ran" in again.stdout
    missing = _command("rerun", str(hyper), "99", cwd=tmp_path)
    assert (
        missing.returncode == 1
        and "Trial 99 of study" in missing.stdout
        and "no such trial" in missing.stdout
    )


def test_rerun_of_the_torch_examples_best_trial_gives_its_value_back(tmp_path):
    needs_module("torch")
    hyper = yaml.safe_load((ROOT / "examples/torch/hyper.yml").read_text())
    hyper["optuna"].update(n_trials=3, save_path=str(tmp_path / "results"))
    hyper["optuna"]["objective"] = str(ROOT / "examples/torch/objective.py")
    hyper["log"]["save_path"] = str(tmp_path / "results/log.txt")
    model = yaml.safe_load((ROOT / "examples/torch/model.yml").read_text())
    model["trainer"]["epochs"] = 3
    (tmp_path / "hyper.yml").write_text(yaml.safe_dump(hyper, sort_keys=False))
    (tmp_path / "model.yml").write_text(yaml.safe_dump(model, sort_keys=False))
    proc = run_optimize(tmp_path / "hyper.yml", tmp_path / "model.yml", "--workers", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    best = load_study(tmp_path / "hyper.yml", tmp_path / "model.yml").best_trial
    rerun = _command("rerun", str(tmp_path / "results/configs/hyper.yml"), str(best.number), cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"val_loss: rerun {best.value:.6g}, stored {best.value:.6g}: the same" in rerun.stdout


@pytest.mark.parametrize("kind", ["not a repository", "a file that is gone"])
def test_git_state_outside_a_repository_is_none(tmp_path, kind):
    path = tmp_path / "objective.py"
    if kind == "not a repository":
        path.write_text("x = 1\n")
    assert git_state(path) is None

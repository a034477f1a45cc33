"""The Python API: a study run from Python, and workers submitted through submitit executors."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import optuna
import pytest
import submitit
from optuna.trial import TrialState

import aimlutils.hyper_opt as hyper_opt
from aimlutils.hyper_opt import BaseObjective, optimize, submit
from tests.conftest import MODEL, ROOT, hyper_config, needs_module, run_optimize

TORCH = ROOT / "examples" / "torch"


class Quadratic(BaseObjective):
    """An Objective defined in a test file, as a notebook user defines one in a cell."""

    def train(self, trial: optuna.trial.BaseTrial, conf: dict[str, Any]) -> dict[str, float]:
        x = conf["optimizer"]["learning_rate"]
        if conf.get("test", {}).get("fail"):
            raise RuntimeError("wrong on purpose")
        return {"val_loss": (x - 0.3) ** 2}


def _dicts(tmp_path: Path, n_trials: int = 5, **test: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    hyper = hyper_config(tmp_path / "results", tmp_path / "unused.py", n_trials=n_trials)
    del hyper["optuna"]["objective"]  # the class is the objective
    return hyper, dict(MODEL, test=test)


def _finished(study: optuna.Study) -> int:
    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials())


def test_the_public_api_is_listed():
    assert set(hyper_opt.__all__) >= {"optimize", "submit", "BaseObjective", "ConfigError"}
    assert all(getattr(hyper_opt, name) is not None for name in hyper_opt.__all__)


def test_optimize_runs_the_torch_example_from_python(tmp_path):
    needs_module("torch")
    overrides = [f"optuna.save_path={tmp_path}", f"log.save_path={tmp_path}/log.txt", "optuna.n_trials=4"]
    study = optimize(TORCH / "hyper.yml", TORCH / "model.yml", workers=2, overrides=overrides, base_dir=ROOT)
    assert _finished(study) == 4
    assert (tmp_path / "trial_results.csv").exists()


def test_optimize_with_an_objective_class_and_dicts_runs_in_this_process(tmp_path):
    hyper, model = _dicts(tmp_path)
    study = optimize(hyper, model, objective=Quadratic)
    assert _finished(study) == 5
    assert {t.user_attrs["record"]["worker"]["pid"] for t in study.trials} == {os.getpid()}


def test_optimize_with_several_workers_runs_them_as_local_processes(tmp_path):
    hyper, model = _dicts(tmp_path, n_trials=6)
    study = optimize(hyper, model, objective=Quadratic, workers=2)
    assert _finished(study) == 6
    pids = {t.user_attrs["record"]["worker"]["pid"] for t in study.trials}
    assert os.getpid() not in pids  # the workers were processes of their own


def test_debug_executor_runs_one_trial_in_this_process(tmp_path):
    hyper, model = _dicts(tmp_path)
    jobs = submit(hyper, model, submitit.DebugExecutor(tmp_path / "submitit"), workers=4, objective=Quadratic)
    assert len(jobs) == 1
    assert jobs[0].result() == 1
    study = optuna.load_study(study_name=hyper["optuna"]["name"], storage=_storage(tmp_path))
    assert _finished(study) == 1


def _storage(tmp_path: Path) -> optuna.storages.BaseStorage:
    from aimlutils.hyper_opt.storage import StorageSpec, open_storage

    return open_storage(StorageSpec("journal", str(tmp_path / "results" / "study.journal")))


def test_debug_flag_opens_the_debugger_on_the_first_exception(study_files, tmp_path):
    hyper, model = study_files(test={"fail_on": 1})  # every trial number is a multiple of 1
    proc = run_optimize(hyper, model, "--debug", stdin="where\nquit\n")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "The trial failed with RuntimeError: boom on purpose" in proc.stdout
    assert "(Pdb)" in proc.stdout
    assert re.search(r"objective\.py\(\d+\)train\(\)", proc.stdout)  # stopped in the user's train


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_auto_executor_submits_one_array_to_the_cluster_and_ends_at_n_trials(tmp_path):
    hyper, model = _dicts(tmp_path, n_trials=8)
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit")
    assert executor.cluster == "slurm"
    executor.update_parameters(timeout_min=10, cpus_per_task=1, slurm_array_parallelism=4)
    jobs = submit(hyper, model, executor, workers=4, objective=Quadratic)
    assert len(jobs) == 4 and len({j.job_id.split("_")[0] for j in jobs}) == 1  # one array
    ran = [j.result() for j in jobs]
    study = optuna.load_study(study_name=hyper["optuna"]["name"], storage=_storage(tmp_path))
    assert _finished(study) == 8 and sum(ran) == 8
    job_ids = {t.user_attrs["record"]["worker"]["job_id"] for t in study.trials}
    assert job_ids <= {j.job_id for j in jobs}

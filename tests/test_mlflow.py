"""MLflow tracking: a run per trial under a run for the study, read back with MLflow's own client."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import optuna
import pytest

from aimlutils.hyper_opt import cli
from aimlutils.hyper_opt.base_objective import BaseObjective
from aimlutils.hyper_opt.config import ConfigError, load_config
from aimlutils.hyper_opt.coordination import study as study_lib
from aimlutils.hyper_opt.storage import open_storage
from tests.conftest import needs_module

ROOT = Path(__file__).resolve().parents[1]
# No usage reports from test runs, and no waiting on a network CI may not have.
QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true"}


@pytest.fixture(autouse=True)
def _quiet_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in QUIET.items():
        monkeypatch.setenv(key, value)


def client_for(save_path: Path) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{save_path / 'mlruns' / 'mlflow.db'}")


def runs_of(save_path: Path, study_name: str) -> tuple[Any, Any, list[Any]]:
    """The client, the study's run and its trial runs, from the default store in ``save_path``."""
    client = client_for(save_path)
    experiment = client.get_experiment_by_name(study_name)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("aimlutils.role") == "study"]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return client, parents[0], children


def test_ten_trials_from_two_workers_are_child_runs_and_the_report_logs_the_best(study_files, capsys):
    needs_module("mlflow")
    hyper, model = study_files(n_trials=10, test={"steps": 2, "sleep": 0.1}, sections={"mlflow": {}})
    proc = subprocess.run(
        [sys.executable, str(ROOT / "optimize.py"), str(hyper), str(model), "--workers", "2"],
        capture_output=True,
        text=True,
        cwd=hyper.parent,
        env=dict(os.environ, **QUIET),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cfg = load_config(hyper, model)
    assert cli.main(["report", str(hyper), str(model)]) == 0
    assert "MLflow: best val_loss" in capsys.readouterr().out

    study = optuna.load_study(study_name=cfg.study_name, storage=open_storage(cfg.storage))
    client, parent, children = runs_of(cfg.save_path, cfg.study_name)
    assert len(children) == 10
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in children}
    for trial in study.trials:
        run = by_number[trial.number]
        assert run.info.status == "FINISHED"
        assert run.data.tags["optuna.state"] == "COMPLETE"
        assert float(run.data.params["lr"]) == trial.params["lr"]
        assert run.data.metrics["val_loss"] == pytest.approx(trial.value)
        assert run.data.metrics["lr_seen"] == pytest.approx(trial.params["lr"])
        steps = client.get_metric_history(run.info.run_id, "intermediate_value")
        assert {m.step: m.value for m in steps} == pytest.approx(trial.intermediate_values)
    assert {r.data.tags["worker.worker"] for r in children} == {"0", "1"}  # both workers logged

    assert parent.data.metrics["best_val_loss"] == pytest.approx(study.best_value)
    assert parent.data.tags["best_trial"] == str(study.best_trial.number)
    assert float(parent.data.tags["best.lr"]) == study.best_params["lr"]
    assert parent.info.status == "FINISHED"  # the study is done


class _Objective(BaseObjective):
    """Trial 0 completes and logs a file to its run, trial 1 is pruned, trial 2 fails."""

    active: dict[int, str] = {}  # noqa: RUF012 - filled by the test's trials

    def train(self, trial: optuna.trial.BaseTrial, conf: dict[str, Any]) -> dict[str, Any]:
        import mlflow

        self.active[trial.number] = mlflow.active_run().info.run_id
        trial.report(0.5, 0)
        if trial.number == 1:
            trial.report(0.4, 1)
            raise optuna.TrialPruned()
        if trial.number == 2:
            raise RuntimeError("out of memory on purpose")
        mlflow.log_text("the model would go here", "model.txt")
        return {"val_loss": 0.25, "epochs": 3, "note": "text is not a metric"}


def test_trial_run_is_active_in_train_and_records_pruned_and_failed_states(study_files):
    needs_module("mlflow")
    from aimlutils.hyper_opt.objective.tracking import TrialTracker

    hyper, model = study_files(sections={"mlflow": {"experiment_name": "digits"}})
    cfg = load_config(hyper, model)
    study, _ = study_lib.create_or_load(cfg, open_storage(cfg.storage), 1)
    objective = _Objective(None, cfg.model)
    objective.search_space = cfg.space
    objective.mlflow_run = TrialTracker(cfg, {"worker": 7, "job_id": "123_4"}).trial_run
    study.optimize(objective, n_trials=3, catch=(RuntimeError,))

    client = client_for(cfg.save_path)
    experiment = client.get_experiment_by_name("digits")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    done, pruned, failed = runs["trial_0"], runs["trial_1"], runs["trial_2"]
    assert [_Objective.active[n] for n in range(3)] == [r.info.run_id for r in (done, pruned, failed)]
    assert (done.info.status, done.data.tags["optuna.state"]) == ("FINISHED", "COMPLETE")
    assert done.data.metrics == {"val_loss": 0.25, "epochs": 3.0, "intermediate_value": 0.5}
    assert [a.path for a in client.list_artifacts(done.info.run_id)] == ["model.txt"]
    assert (pruned.info.status, pruned.data.tags["optuna.state"]) == ("FINISHED", "PRUNED")
    assert len(client.get_metric_history(pruned.info.run_id, "intermediate_value")) == 2
    assert (failed.info.status, failed.data.tags["optuna.state"]) == ("FAILED", "FAIL")
    assert failed.data.tags["fail_reason"] == "RuntimeError: out of memory on purpose"
    assert done.data.tags["worker.job_id"] == "123_4"
    assert runs[cfg.study_name].data.tags["aimlutils.role"] == "study"


def test_without_an_mlflow_section_nothing_imports_mlflow(study_files):
    hyper, model = study_files(n_trials=2)
    cfg = load_config(hyper, model)
    study_lib.create_or_load(cfg, open_storage(cfg.storage), 1)
    code = (
        "import sys\n"
        "from aimlutils.hyper_opt import cli, worker\n"
        "from aimlutils.hyper_opt.config import load_config\n"
        f"assert worker.Worker(load_config({str(hyper)!r}, {str(model)!r})).run() == 2\n"
        f"assert cli.main(['report', {str(hyper)!r}, {str(model)!r}]) == 0\n"
        "print('mlflow imported:', 'mlflow' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "mlflow imported: False" in proc.stdout


def test_mlflow_section_is_checked_with_the_config(study_files):
    hyper, model = study_files(sections={"mlflow": {"tracking_url": "http://x"}})
    with pytest.raises(ConfigError) as err:
        load_config(hyper, model)
    assert "mlflow.tracking_url: unknown key (did you mean 'tracking_uri'?)" in str(err.value)
    hyper, model = study_files(sections={"mlflow": {}})
    real = importlib.util.find_spec
    with (
        mock.patch("importlib.util.find_spec", lambda n, *a: None if n == "mlflow" else real(n, *a)),
        pytest.raises(ConfigError) as err,
    ):
        load_config(hyper, model)
    assert "the mlflow section needs MLflow: pip install 'aimlutils[mlflow]'" in str(err.value)


def test_relative_sqlite_tracking_uri_is_taken_from_save_path(study_files):
    from aimlutils.hyper_opt.objective.tracking import experiment_name, tracking_uri

    hyper, model = study_files(sections={"mlflow": {"tracking_uri": "sqlite:///runs/mlflow.db"}})
    cfg = load_config(hyper, model)
    assert tracking_uri(cfg) == f"sqlite:///{cfg.save_path}/runs/mlflow.db"
    assert experiment_name(cfg) == cfg.study_name
    hyper, model = study_files(sections={"mlflow": {"tracking_uri": "http://mlflow.example:5000"}})
    assert tracking_uri(load_config(hyper, model)) == "http://mlflow.example:5000"

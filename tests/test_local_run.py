"""optimize.py end to end on this machine: real worker processes sharing one study."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from aimlutils.hyper_opt.config import load_config
from aimlutils.hyper_opt.storage import open_storage
from tests.conftest import OBJECTIVE, run_optimize, service_url

ROOT = Path(__file__).resolve().parents[1]
# Optuna's own command line, installed next to this interpreter.
OPTUNA_CLI = str(Path(sys.executable).parent / "optuna")


optimize = run_optimize


def start_optimize(hyper: Path, model: Path, *args: str) -> subprocess.Popen[str]:
    """optimize.py in the background, for tests that signal or kill it."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "optimize.py"), str(hyper), str(model), *args],
        cwd=hyper.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def load_study(hyper: Path, model: Path) -> optuna.Study:
    cfg = load_config(hyper, model, base_dir=hyper.parent)
    return optuna.load_study(study_name=cfg.study_name, storage=open_storage(cfg.storage))


def csv_rows(hyper: Path, model: Path) -> list[dict[str, str]]:
    cfg = load_config(hyper, model, base_dir=hyper.parent)
    with open(cfg.csv_path, newline="") as fh:
        return list(csv.DictReader(fh))


def states(study: optuna.Study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))


def test_seed_002_hyperparameter_file_runs_locally(tmp_path):
    """The seed's log/slurm/optuna file, parameters num_dense, dropout and optimizer:learning_rate."""
    (tmp_path / "examples/torch").mkdir(parents=True)
    (tmp_path / "examples/torch/objective.py").write_text(OBJECTIVE)
    hyper = yaml.safe_load((ROOT / "configs/seed-002-hyper.yml").read_text())
    hyper["optuna"]["n_trials"] = 6
    (tmp_path / "hyper.yml").write_text(yaml.safe_dump(hyper, sort_keys=False))
    model = yaml.safe_load((ROOT / "configs/seed-002-model.yml").read_text())
    (tmp_path / "model.yml").write_text(yaml.safe_dump(model))
    proc = optimize(tmp_path / "hyper.yml", tmp_path / "model.yml", "--local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Not in the model config, left to custom_updates: num_dense, dr" in proc.stdout
    rows = csv_rows(tmp_path / "hyper.yml", tmp_path / "model.yml")
    assert len(rows) == 6
    for row in rows:
        # conf["optimizer"]["learning_rate"] received the trial's value ...
        assert float(row["lr_seen"]) == pytest.approx(float(row["lr"]))
        # ... and custom_updates turned num_dense into the layer list.
        assert int(row["hidden_seen"]) == int(row["num_dense"])
    assert (tmp_path / "test/log.txt").exists() or (tmp_path / "path/to/data/log.txt").exists()


def test_slurm_section_without_sbatch_suggests_local(tmp_path, study_files):
    hyper, model = study_files()
    data = yaml.safe_load(hyper.read_text())
    data["slurm"] = {"jobs": 2, "batch": {"t": "01:00:00"}}
    hyper.write_text(yaml.safe_dump(data))
    env = dict(os.environ, PATH=str(Path(sys.executable).parent))
    proc = optimize(hyper, model, env=env)
    assert proc.returncode == 2
    assert "sbatch is not on PATH" in proc.stdout and "--local" in proc.stdout
    assert not (tmp_path / "results").exists()


def test_each_local_worker_is_pinned_to_one_gpu(study_files):
    hyper, model = study_files(test={"sleep": 0.2}, n_trials=12, gpu=True)
    # Four visible GPUs (ids as CUDA_VISIBLE_DEVICES would give them); no --workers: one per GPU.
    proc = optimize(hyper, model, env=dict(os.environ, CUDA_VISIBLE_DEVICES="0,1,2,3"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 local workers on GPUs 0, 1, 2, 3" in proc.stdout
    rows = csv_rows(hyper, model)
    assert {r["device_seen"] for r in rows} == {"cuda:0"}
    gpu_of_pid: dict[str, set[str]] = {}
    for r in rows:
        gpu_of_pid.setdefault(r["pid"], set()).add(r["gpu_seen"])
    assert all(len(gpus) == 1 for gpus in gpu_of_pid.values())  # a worker keeps its GPU
    assert sorted(g for gpus in gpu_of_pid.values() for g in gpus) == ["0", "1", "2", "3"]


def test_cpu_workers_get_cpu_device(study_files):
    hyper, model = study_files(n_trials=2)
    proc = optimize(hyper, model, env=dict(os.environ, CUDA_VISIBLE_DEVICES="0,1"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {r["device_seen"] for r in csv_rows(hyper, model)} == {"cpu"}


def test_sqlite_with_several_workers_warns(study_files):
    hyper, model = study_files(n_trials=2, storage="sqlite:///results/s.db")
    proc = optimize(hyper, model, "--workers", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "unsafe on network file systems" in proc.stdout


def test_four_workers_stop_at_exactly_n_trials(study_files):
    hyper, model = study_files(
        test={"sleep": 0.05, "steps": 3}, n_trials=16, pruner={"type": "MedianPruner", "n_startup_trials": 2}
    )
    proc = optimize(hyper, model, "--workers", "4")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    study = load_study(hyper, model)
    counts = states(study)
    assert counts.get("COMPLETE", 0) + counts.get("PRUNED", 0) == 16
    assert "RUNNING" not in counts
    assert len({t.user_attrs["record"]["worker"]["pid"] for t in finished(study)}) == 4


def test_pruned_and_failed_trials_are_rows_of_the_csv(study_files):
    hyper, model = study_files(
        test={"steps": 4, "fail_on": 5},
        n_trials=16,  # RandomSampler: about half the trials start above 0.5 and are pruned
        pruner={"type": "ThresholdPruner", "upper": 1.5},
    )
    proc = optimize(hyper, model, "--workers", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    study = load_study(hyper, model)
    rows = {int(r["trial"]): r for r in csv_rows(hyper, model)}
    assert len(rows) == len(finished(study))
    by_state = {s: [r for r in rows.values() if r["state"] == s] for s in ("COMPLETE", "PRUNED", "FAIL")}
    assert by_state["PRUNED"] and by_state["FAIL"] and by_state["COMPLETE"]
    assert all(r["fail_reason"] == "RuntimeError: boom on purpose" for r in by_state["FAIL"])
    # A pruned trial keeps its last intermediate value.
    for r in by_state["PRUNED"]:
        trial = study.trials[int(r["trial"])]
        assert float(r["value"]) == pytest.approx(trial.intermediate_values[max(trial.intermediate_values)])


def test_nan_metric_fails_the_trial_and_the_worker_goes_on(study_files):
    hyper, model = study_files(test={"return_nan": True}, n_trials=4)
    proc = optimize(hyper, model, "--workers", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = csv_rows(hyper, model)
    failed = [r for r in rows if r["state"] == "FAIL"]
    assert failed and all("val_loss=nan, which is not finite" in r["fail_reason"] for r in failed)
    assert sum(r["state"] == "COMPLETE" for r in rows) == 4


def test_eight_workers_write_one_row_per_finished_trial(study_files):
    hyper, model = study_files(test={"fail_on": 7}, n_trials=40)
    proc = optimize(hyper, model, "--workers", "8")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    study = load_study(hyper, model)
    counts = states(study)
    # Failed trials (every 7th) do not use up n_trials: exactly 40 finished, none left running.
    assert counts.get("COMPLETE", 0) + counts.get("PRUNED", 0) == 40 and counts.get("FAIL", 0) >= 1
    assert "RUNNING" not in counts, counts
    rows = csv_rows(hyper, model)
    assert len(rows) == len(finished(study))
    assert sorted(int(r["trial"]) for r in rows) == sorted(t.number for t in finished(study))


def test_reload_0_refuses_an_existing_study_and_reload_1_continues_it(study_files):
    hyper, model = study_files(n_trials=3)
    assert optimize(hyper, model).returncode == 0
    again = optimize(hyper, model)
    assert again.returncode == 2
    assert "already exists" in again.stdout and "set optuna.reload: 1" in again.stdout
    data = yaml.safe_load(hyper.read_text())
    data["optuna"].update(reload=1, n_trials=7)
    hyper.write_text(yaml.safe_dump(data))
    proc = optimize(hyper, model)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Continuing study" in proc.stdout
    assert states(load_study(hyper, model)) == {"COMPLETE": 7}
    assert len(csv_rows(hyper, model)) == 7
    done = optimize(hyper, model, "--reload")
    assert done.returncode == 0 and "already has 7 of 7 trials" in done.stdout


def test_export_csv_rebuilds_the_file_from_the_study(study_files):
    hyper, model = study_files(n_trials=5)
    assert optimize(hyper, model).returncode == 0
    before = csv_rows(hyper, model)
    cfg = load_config(hyper, model, base_dir=hyper.parent)
    cfg.csv_path.unlink()
    proc = optimize(hyper, model, "--export-csv")
    assert proc.returncode == 0 and "wrote 5 rows" in proc.stdout
    after = csv_rows(hyper, model)
    key = lambda r: int(r["trial"])  # noqa: E731
    assert sorted(after, key=key) == sorted(before, key=key)


def test_ctrl_c_stops_workers_and_leaves_the_study_loadable(study_files, held):
    # Trials 0 and 1 finish; from trial 2 on each waits inside the objective, never released:
    # Ctrl-C comes once both workers are mid-trial, however slowly the machine runs them.
    hyper, model = study_files(test={"sleep": 0.1, "steps": 4, **held.knobs(40, first=2)}, n_trials=40)
    proc = start_optimize(hyper, model, "--workers", "2")
    try:
        assert sorted(held.wait(2)) == [2, 3]
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "set optuna.reload: 1 to continue" in out
    study = load_study(hyper, model)
    counts = states(study)
    assert "RUNNING" not in counts and counts.get("COMPLETE", 0) + counts.get("PRUNED", 0) == 2, counts
    assert sorted(t.number for t in study.trials if t.state == TrialState.FAIL) == [2, 3]
    # The interrupted trials' parameters wait for the next run.
    assert counts.get("WAITING", 0) == counts["FAIL"]
    assert len(csv_rows(hyper, model)) == len(finished(study))
    # Workers are gone.
    pids = {t.user_attrs["record"]["worker"]["pid"] for t in finished(study)}
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.parametrize("kind", ["journal", "sqlite", "postgresql", "mysql", "redis"])
def test_each_storage_kind_runs_and_reloads(study_files, kind):
    storage = {
        "journal": None,
        "sqlite": "sqlite:///results/study.db",
        "postgresql": None,
        "mysql": None,
        "redis": None,
    }[kind]
    if kind in ("postgresql", "mysql", "redis"):
        storage = service_url(kind)
    extra = {"storage": storage} if storage else {}
    hyper, model = study_files(n_trials=4, **extra)
    proc = optimize(hyper, model, "--workers", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = yaml.safe_load(hyper.read_text())
    data["optuna"].update(reload=1, n_trials=6)
    hyper.write_text(yaml.safe_dump(data))
    proc = optimize(hyper, model, "--workers", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    study = load_study(hyper, model)
    assert states(study) == {"COMPLETE": 6}
    assert len(csv_rows(hyper, model)) == 6
    if kind == "sqlite":
        assert (hyper.parent / "results/study.db").exists()


def test_killed_worker_trial_is_failed_and_its_parameters_rerun(study_files, held):
    # Trial 0 waits inside the objective until released, which it never is: its worker is
    # killed there, mid-trial for sure. The other worker runs the rest.
    hyper, model = study_files(test={"sleep": 0.4, "steps": 3, **held.knobs(1)}, n_trials=8)
    proc = start_optimize(hyper, model, "--workers", "2")
    ((number, owner),) = held.wait(1).items()
    os.kill(owner["pid"], signal.SIGKILL)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out  # the launcher says a worker died ...
    assert "exited with code -9" in out
    study = load_study(hyper, model)
    counts = states(study)
    assert "RUNNING" not in counts  # ... but its trial is not left RUNNING,
    assert counts["COMPLETE"] == 8
    failed = study.trials[number]
    assert (
        failed.state == TrialState.FAIL
        and "ended during the trial" in failed.user_attrs["record"]["fail_reason"]
    )
    retries = [t for t in study.trials if t.user_attrs.get("retry_of") == number]
    assert len(retries) == 1 and retries[0].params == failed.params  # and its parameters ran again.
    assert len(csv_rows(hyper, model)) == len(finished(study))


def test_a_study_made_with_optunas_cli_is_used_as_it_is(study_files, tmp_path):
    url = f"sqlite:///{tmp_path}/made.db"
    hyper, model = study_files(n_trials=3, storage=url, direction="maximize", name="made-beforehand")
    create = [OPTUNA_CLI, "create-study", "--study-name", "made-beforehand"]
    subprocess.run([*create, "--storage", url, "--direction", "maximize"], check=True, capture_output=True)
    proc = optimize(hyper, model)  # reload: 0, but the study has no trials yet: not a reload
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert states(load_study(hyper, model)) == {"COMPLETE": 3}


def test_a_study_with_the_other_direction_is_a_config_error(study_files, tmp_path):
    url = f"sqlite:///{tmp_path}/made.db"
    hyper, model = study_files(n_trials=3, storage=url, name="made-beforehand")
    create = [OPTUNA_CLI, "create-study", "--study-name", "made-beforehand"]
    subprocess.run([*create, "--storage", url, "--direction", "maximize"], check=True, capture_output=True)
    proc = optimize(hyper, model)
    assert proc.returncode == 2
    assert "optimizes ['maximize'], but optuna.direction is ['minimize']" in proc.stdout

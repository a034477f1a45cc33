"""A save_path holds one study, on a file system whose locks work; optimize.py of one study run at
once create it once and queue its grid once."""

from __future__ import annotations

import multiprocessing
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from aimlutils.hyper_opt.config import load_config
from aimlutils.hyper_opt.coordination import study as study_lib
from aimlutils.hyper_opt.errors import ExitCode
from aimlutils.hyper_opt.storage import open_storage
from aimlutils.hyper_opt.storage.locks import lock_problem
from tests.conftest import run_optimize


def test_a_second_study_in_one_save_path_is_refused_before_anything_is_made(study_files, tmp_path):
    hyper, model = study_files(n_trials=2)
    assert run_optimize(hyper, model).returncode == 0
    other = yaml.safe_load(hyper.read_text())
    other["optuna"]["name"] = "another-study"
    other_path = tmp_path / "other.yml"
    other_path.write_text(yaml.safe_dump(other))
    proc = run_optimize(other_path, model)
    out = proc.stdout + proc.stderr
    assert proc.returncode == ExitCode.CONFIG, out
    first = yaml.safe_load(hyper.read_text())["optuna"]["name"]
    assert f"holds study {first!r}" in out and "optuna.save_path" in out, out
    cfg = load_config(other_path, model, base_dir=tmp_path)
    names = [s.study_name for s in optuna.get_all_study_summaries(open_storage(cfg.storage))]
    assert names == [first]  # the second study was not made


@pytest.mark.parametrize(
    ("options", "refused"),
    [
        ("rw,vers=4.2,local_lock=all", True),
        ("rw,nolock,vers=3", True),
        ("rw,vers=4.2,local_lock=none", False),
    ],
)
def test_nfs_without_cluster_wide_locks_is_refused(tmp_path, options, refused):
    mounts = f"srv:/home {tmp_path} nfs4 {options} 0 0\n/dev/sda1 / ext4 rw 0 0\n"
    problem = lock_problem(tmp_path / "study", mounts)
    assert (problem is not None) == refused, problem
    if refused:
        assert "one node only" in problem and "Redis or a database" in problem


def test_a_local_file_system_takes_locks(tmp_path):
    assert lock_problem(tmp_path) is None


def _create_or_load(hyper: str, model: str, start: multiprocessing.synchronize.Barrier) -> None:
    cfg = load_config(hyper, model, base_dir=Path(hyper).parent)
    storage = open_storage(cfg.storage)
    start.wait()
    study_lib.create_or_load(cfg, storage, 1)


def _choices(name: str, choices: list[float]) -> dict[str, object]:
    return {"type": "categorical", "settings": {"name": name, "choices": choices}}


def test_optimize_py_run_four_times_at_once_makes_one_study_and_queues_its_grid_once(study_files):
    hyper, model = study_files(
        n_trials=12,
        reload=1,
        name=f"grid-{uuid.uuid4().hex[:6]}",
        sampler={"type": "GridSampler"},
        parameters={
            "optimizer:learning_rate": {
                "type": "categorical",
                "settings": {"name": "lr", "choices": [0.1, 0.2, 0.3]},
            },
            "model:dense_dropouts": {
                "type": "categorical",
                "settings": {"name": "d", "choices": [0.0, 0.1, 0.2, 0.3]},
            },
        },
    )
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(4)
    procs = [ctx.Process(target=_create_or_load, args=(str(hyper), str(model), start)) for _ in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    cfg = load_config(hyper, model, base_dir=hyper.parent)
    study = optuna.load_study(study_name=cfg.study_name, storage=open_storage(cfg.storage))
    waiting = [t.system_attrs["fixed_params"] for t in study.get_trials(states=(TrialState.WAITING,))]
    assert len(waiting) == 12 and len({tuple(sorted(p.items())) for p in waiting}) == 12, waiting

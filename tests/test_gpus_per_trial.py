"""Several GPUs per trial: each worker gets ``gpus_per_trial`` distinct GPUs of its allocation."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from aimlutils.hyper_opt.config import ConfigError, load_config
from aimlutils.hyper_opt.config.command import CommandSpec
from aimlutils.hyper_opt.launchers import batch_launcher, default_workers, gpu_groups
from tests.conftest import run_optimize
from tests.test_local_run import csv_rows

SLURM = {"jobs": 2, "gpus_per_node": 4, "gpus_per_trial": 2, "batch": {"gres": "gpu:4", "t": "10"}}


def offline_path(tmp_path: Path) -> str:
    """``PATH`` with a ``squeue`` that answers nothing first: a job script run here asks no cluster."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "squeue").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "squeue").chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


def _script_workers(tmp_path: Path, visible: str) -> dict[int, str]:
    """Run the generated job script with bash, each worker replaced by one that writes down its
    ``CUDA_VISIBLE_DEVICES``; returns ``{worker index: ids}``."""
    hyper, model = tmp_path / "hyper.yml", tmp_path / "model.yml"
    launcher = batch_launcher(load_config(hyper, model))
    assert launcher is not None
    fake = tmp_path / "fake-python"
    out = tmp_path / "seen"
    out.mkdir()
    fake.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/bash
            while (($#)); do [[ $1 == --index ]] && index=$2; shift; done
            echo "$CUDA_VISIBLE_DEVICES" > {out}/$index
            """
        )
    )
    fake.chmod(0o755)
    text = launcher.plan(100).text.replace(sys.executable, str(fake))
    env = {"PATH": offline_path(tmp_path), "SLURM_JOB_ID": "1", "CUDA_VISIBLE_DEVICES": visible}
    proc = subprocess.run(["bash", "-c", text], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return {int(p.name): p.read_text().strip() for p in out.iterdir()}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, {0: "0,1", 1: "2,3"}),
        ({"tasks_per_worker": 2}, {0: "0,1", 1: "2,3", 2: "0,1", 3: "2,3"}),
        ({"gpus_per_trial": 4}, {0: "0,1,2,3"}),
        ({"gpus_per_trial": 1}, {0: "0", 1: "1", 2: "2", 3: "3"}),
    ],
    ids=["2-of-4", "2-of-4-twice", "4-of-4", "1-of-4"],
)
def test_each_worker_of_a_job_gets_its_own_gpus(study_files, tmp_path, changes, expected):
    study_files(gpu=True, sections={"slurm": {**SLURM, **changes}})
    seen = _script_workers(tmp_path, "0,1,2,3")
    # Worker numbers run on across jobs: this is the first job's.
    assert seen == expected


def test_the_job_runs_gpus_per_node_over_gpus_per_trial_workers(study_files):
    hyper, model = study_files(gpu=True, sections={"slurm": SLURM})
    launcher = batch_launcher(load_config(hyper, model))
    assert launcher is not None and launcher.workers_per_job == 2
    text = launcher.plan(4).text
    assert "each on 2 GPUs of its" in text and "--workers 4" in text


def test_gpus_per_trial_in_optuna_applies_to_jobs_too(study_files):
    section = {k: v for k, v in SLURM.items() if k != "gpus_per_trial"}
    hyper, model = study_files(gpu=True, gpus_per_trial=2, sections={"slurm": section})
    cfg = load_config(hyper, model)
    launcher = batch_launcher(cfg)
    assert launcher is not None and launcher.workers_per_job == 2 and cfg.gpus_per_trial == 2


BAD = [
    (
        {"slurm": {**SLURM, "gpus_per_trial": 3}},
        {},
        "slurm.gpus_per_trial",
        "does not divide slurm.gpus_per_node (4)",
    ),
    (
        {"slurm": {"gpus_per_trial": 2, "batch": {"gres": "gpu:1"}}},
        {},
        "slurm.gpus_per_trial",
        "2 GPUs per trial, but the job asks for 1 GPU(s) in slurm.batch.gres",
    ),
    (
        {"pbs": {"gpus_per_trial": 2, "batch": {"l": ["select=1:ncpus=4"]}}},
        {},
        "pbs.gpus_per_trial",
        "the job asks for no GPU in pbs.batch.l",
    ),
    (
        {"slurm": {"gpus_per_node": 2, "batch": {"gres": "gpu:2"}}},
        {"gpus_per_trial": 4},
        "optuna.gpus_per_trial",
        "4 GPUs per trial does not divide slurm.gpus_per_node (2)",
    ),
    (
        {"slurm": SLURM},
        {"gpus_per_trial": 4},
        "optuna.gpus_per_trial",
        "4 differs from slurm.gpus_per_trial (2)",
    ),
    ({}, {"gpus_per_trial": 2, "gpu": False}, "optuna.gpus_per_trial", "but optuna.gpu is not true"),
    ({}, {"gpus_per_trial": 0}, "optuna.gpus_per_trial", "greater than or equal to 1"),
]


@pytest.mark.parametrize(
    ("sections", "optuna", "path", "fragment"), BAD, ids=[b[2] + ":" + b[3][:20] for b in BAD]
)
def test_inconsistent_gpus_per_trial_is_a_config_error(study_files, capsys, sections, optuna, path, fragment):
    hyper, model = study_files(sections=sections, **{"gpu": True, **optuna})
    with pytest.raises(ConfigError) as err:
        load_config(hyper, model)
    assert any(p.path == path and fragment in p.message for p in err.value.problems), str(err.value)


def test_local_workers_each_see_two_distinct_gpus(study_files):
    hyper, model = study_files(test={"sleep": 0.3}, n_trials=6, gpu=True, gpus_per_trial=2)
    # Four visible GPUs, as CUDA_VISIBLE_DEVICES gives them; no --workers: one per 2 GPUs.
    proc = run_optimize(hyper, model, env=dict(os.environ, CUDA_VISIBLE_DEVICES="0,1,2,3"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 local workers on GPUs 0,1; 2,3 (2 per trial)" in proc.stdout
    rows = csv_rows(hyper, model)
    assert {r["device_seen"] for r in rows} == {"cuda:0"} and {r["gpus_seen"] for r in rows} == {"2"}
    gpus_of_pid: dict[str, set[str]] = {}
    for r in rows:
        gpus_of_pid.setdefault(r["pid"], set()).add(r["gpu_seen"])
    assert sorted(gpus_of_pid.values(), key=sorted) == [{"0,1"}, {"2,3"}]


def test_a_local_run_with_fewer_gpus_than_a_trial_needs_stops_before_anything(study_files, tmp_path):
    hyper, model = study_files(gpu=True, gpus_per_trial=4)
    proc = run_optimize(hyper, model, env=dict(os.environ, CUDA_VISIBLE_DEVICES="0,1"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "optuna.gpus_per_trial: 4 GPUs per trial, but this machine shows 2 (GPU 0, 1)" in proc.stderr
    assert not (tmp_path / "results").exists()


def test_local_gpu_groups_and_worker_count():
    assert gpu_groups(["0", "1", "2"], 2) == [["0", "1"]]
    assert default_workers(True, ["0", "1", "2", "3"], 2) == 2
    assert default_workers(True, ["0"], 2) == 2  # no group: CPU workers, the default two
    assert default_workers(False, ["0", "1"], 1) == 2


def test_a_command_gets_its_gpu_count():
    spec = CommandSpec(("torchrun", "--standalone", "--nproc_per_node={gpus}", "train.py", "{parameters}"))
    assert spec.argv({"lr": 0.1}, config="m.yml", trial=3, gpus=2) == [
        "torchrun",
        "--standalone",
        "--nproc_per_node=2",
        "train.py",
        "--lr=0.1",
    ]

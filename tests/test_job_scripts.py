"""Generated job scripts match stored references; bad scheduler options never reach the queue."""

from __future__ import annotations

import difflib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from aimlutils.hyper_opt.cli import main
from tests.conftest import ROOT

REFERENCES = Path(__file__).parent / "references"

SLURM = {
    "jobs": 2,
    "gpus_per_node": 4,
    "throttle": 1,
    "kernel": "conda activate hyper",
    "bash": ["module load cuda/12.2", "source ~/.bashrc"],
    "batch": {
        "account": "NAML0001",
        "gres": "gpu:v100:4",
        "mem": "128G",
        "n": 8,
        "t": "12:00:00",
        "J": "hyper_opt",
        "o": "hyper_opt.out",
        "e": "hyper_opt.err",
    },
}
PBS = {
    "jobs": 2,
    "gpus_per_node": 1,
    "tasks_per_worker": 2,
    "bash": ["source ~/.bashrc"],
    "kernel": "conda activate hyper",
    "batch": {
        "l": ["select=1:ncpus=8:ngpus=1:mem=64GB", "walltime=12:00:00"],
        "A": "NAML0001",
        "q": "casper",
        "N": "torch_example",
        "o": "out",
        "e": "err",
    },
}


def _normalize(text: str, tmp_path: Path) -> str:
    text = text.replace(str(tmp_path), "<DIR>").replace(sys.executable, "<PYTHON>")
    text = text.replace(str(Path.cwd()), "<CWD>")
    return re.sub(r"(slurm|pbs)-\d{8}-\d{6}-\d{6}\.sh", r"\1-<TIME>.sh", text)


@pytest.mark.parametrize(
    ("reference_name", "name", "section"),
    [
        ("slurm", "slurm", SLURM),
        ("pbs", "pbs", PBS),
        ("slurm_gpus_per_trial", "slurm", {**SLURM, "gpus_per_trial": 2}),
    ],
)
def test_dry_run_prints_the_reference_script_and_submits_nothing(
    study_files, tmp_path, capsys, reference_name, name, section
):
    hyper, model = study_files(gpu=True, name="study-ref", sections={name: section})
    assert main([str(hyper), str(model), "--dry-run"]) == 0
    out = _normalize(capsys.readouterr().out, tmp_path)
    reference = REFERENCES / f"{reference_name}_dry_run.txt"
    expected = reference.read_text()
    diff = "".join(difflib.unified_diff(expected.splitlines(True), out.splitlines(True), "reference", "now"))
    assert out == expected, f"{reference.name} differs:\n{diff}"
    assert not (tmp_path / "results").exists()


BAD = [
    ({"batch": {"t": "10", "J": "x\n#SBATCH --exclusive"}}, "slurm.batch.J", "a newline would add lines"),
    (
        {"batch": {"t": "10", "comment": "ok #SBATCH --mem=1T"}},
        "slurm.batch.comment",
        "directive inside a value",
    ),
    ({"batch": {"t": "ten minutes"}}, "slurm.batch.t", "a time limit is minutes, MM:SS, HH:MM:SS"),
    ({"gpus_per_node": 4, "batch": {"gres": "gpu:2"}}, "slurm.gpus_per_node", "asks for 2 GPU(s)"),
    ({"gpus_per_node": 2, "batch": {"t": "10"}}, "slurm.gpus_per_node", "no GPU is requested"),
    ({"batch": {"t": "10"}}, "optuna.gpu", "requests no GPU"),
    ({"jobs": 0, "batch": {"gres": "gpu:1"}}, "slurm.jobs", "greater than or equal to 1"),
    ({"throttle": 2, "array": False, "batch": {"gres": "gpu:1"}}, "slurm.throttle", "job arrays only"),
    ({"batch": {"gres": "gpu:1", "bad key": 1}}, "slurm.batch.bad key", "option name is letters"),
    ({"jobz": 2, "batch": {"gres": "gpu:1"}}, "slurm.jobz", "did you mean 'jobs'?"),
    (
        {"batch": {"gres": "gpu:1", "mem": ["1G", "2G"]}},
        "slurm.batch.mem",
        "an option value is text or a number",
    ),
]


def _squeue_lines() -> int:
    out = subprocess.run(["squeue", "-h", "-r"], capture_output=True, text=True, check=True).stdout
    return len(out.splitlines())


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
@pytest.mark.parametrize(("section", "path", "fragment"), BAD, ids=[b[1] + ":" + b[2][:24] for b in BAD])
def test_bad_scheduler_options_are_refused_before_anything_is_queued(
    study_files, tmp_path, capsys, section, path, fragment
):
    hyper, model = study_files(gpu=True, sections={"slurm": section})
    before = _squeue_lines()
    assert main([str(hyper), str(model)]) == 2
    err = capsys.readouterr().err
    assert any(line.strip().startswith(f"- {path}:") and fragment in line for line in err.splitlines()), err
    assert _squeue_lines() == before
    assert not (tmp_path / "results").exists()


def test_pbs_walltime_that_does_not_parse(study_files, capsys):
    section = yaml.safe_load(yaml.safe_dump(PBS))
    section["batch"]["l"][1] = "walltime=twelve hours"
    hyper, model = study_files(gpu=True, sections={"pbs": section})
    assert main([str(hyper), str(model)]) == 2
    assert "pbs.batch.l: got 'walltime=twelve hours'; walltime is HH:MM:SS" in capsys.readouterr().err


def test_seed_002_config_dry_runs_with_its_slurm_section():
    proc = subprocess.run(
        [
            sys.executable,
            "optimize.py",
            "configs/seed-002-hyper.yml",
            "configs/seed-002-model.yml",
            "--dry-run",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for line in (
        "#SBATCH --account=NAML0001",
        "#SBATCH --gres=gpu:v100:1",
        "#SBATCH -t 12:00:00",
        "--array=0-19",
    ):
        assert line in proc.stdout


def test_separate_jobs_on_request_and_only_as_many_as_useful(study_files):
    from aimlutils.hyper_opt.config import load_config
    from aimlutils.hyper_opt.launchers import batch_launcher

    section = {**SLURM, "array": False, "throttle": None}
    hyper, model = study_files(gpu=True, sections={"slurm": section})
    launcher = batch_launcher(load_config(hyper, model))
    assert launcher is not None and launcher.workers_per_job == 4
    job = launcher.plan(8)
    assert "--array" not in job.text
    assert [c.split()[2] for c in job.submit] == [
        "--export=ALL,AIMLUTILS_JOB_INDEX=0",
        "--export=ALL,AIMLUTILS_JOB_INDEX=1",
    ]
    # Five trials left: two jobs of four workers would leave three idle; 5 workers need 2 jobs, 3 need 1.
    assert launcher.jobs_for(5) == 2 and launcher.jobs_for(3) == 1 and launcher.jobs_for(100) == 2

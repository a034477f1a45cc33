"""How hard a study leans on the scheduler, on a real SLURM cluster (scripts/slurm-test-cluster.sh).

1. Submission: wall time of ``optimize.py`` (interpreter start included) until a 64-task job
   array is submitted; the array is cancelled right after.
2. Load while running: a 64-worker study (16 array tasks x 4 workers, CPU only) with 12 s trials;
   every call of squeue, sbatch, scontrol, scancel and sacct made by the launcher, the job
   scripts and the workers is counted through logging wrappers placed first on PATH.

    python -m benchmarks.scheduler_load [--output docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import optuna
import yaml

from aimlutils.hyper_opt.config import load_config
from aimlutils.hyper_opt.storage import open_storage
from benchmarks.common.doc import write_section

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = ("squeue", "sbatch", "scontrol", "scancel", "sacct")
OBJECTIVE = """
import time
from aimlutils.hyper_opt.base_objective import *

class Objective(BaseObjective):
    def train(self, trial, conf):
        time.sleep(conf["sleep"])
        return {"val_loss": conf["x"]}
"""


def _wrappers(folder: Path) -> Path:
    log = folder / "calls.log"
    for name in PROGRAMS:
        real = shutil.which(name)
        if real is None:
            continue
        wrapper = folder / name
        wrapper.write_text(f'#!/bin/sh\necho "$(date +%s.%N) {name}" >> {log}\nexec {real} "$@"\n')
        wrapper.chmod(0o755)
    return log


def _study(
    folder: Path, jobs: int, per_job: int, n_trials: int, sleep: float, shims: Path
) -> tuple[Path, Path]:
    (folder / "objective.py").write_text(OBJECTIVE)
    # The job script runs a login shell, which resets PATH: put the counting wrappers back first.
    setup = [f"export PATH={shims}:$PATH"]
    hyper = {
        "slurm": {"jobs": jobs, "tasks_per_worker": per_job, "bash": setup, "batch": {"t": "30"}},
        "optuna": {
            "name": "load",
            "objective": str(folder / "objective.py"),
            "n_trials": n_trials,
            "save_path": str(folder / "results"),
            "sampler": {"type": "RandomSampler"},
            "parameters": {"x": {"type": "float", "settings": {"low": 0.0, "high": 1.0}}},
        },
    }
    (folder / "hyper.yml").write_text(yaml.safe_dump(hyper))
    (folder / "model.yml").write_text(yaml.safe_dump({"x": 0.5, "sleep": sleep}))
    return folder / "hyper.yml", folder / "model.yml"


def _optimize(hyper: Path, model: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "optimize.py"), str(hyper), str(model)], env=env, check=True)
    return time.perf_counter() - start


def _job_ids(hyper: Path, model: Path) -> list[str]:
    cfg = load_config(hyper, model)
    return [j["job_id"] for j in json.loads((cfg.save_path / "jobs.json").read_text())]


def submission_time(folder: Path, env: dict[str, str], shims: Path) -> float:
    hyper, model = _study(folder, jobs=64, per_job=1, n_trials=1000, sleep=60, shims=shims)
    elapsed = _optimize(hyper, model, env)
    subprocess.run(["scancel", *_job_ids(hyper, model)], check=True)
    return elapsed


def running_load(
    folder: Path, env: dict[str, str], shims: Path, log: Path
) -> tuple[dict[str, int], float, int, int]:
    hyper, model = _study(folder, jobs=16, per_job=4, n_trials=960, sleep=12.0, shims=shims)
    log.write_text("")
    started = time.time()
    _optimize(hyper, model, env)
    ids = _job_ids(hyper, model)
    squeue = ["squeue", "-h", "-j", ",".join(ids)]
    while subprocess.run(squeue, capture_output=True, text=True).stdout.strip():
        time.sleep(2)
    elapsed = time.time() - started
    cfg = load_config(hyper, model)
    study = optuna.load_study(study_name=cfg.study_name, storage=open_storage(cfg.storage))
    done = sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)
    calls: dict[str, int] = {}
    late = 0  # calls once every job has started (the first 30 s hold submission and job starts)
    for line in log.read_text().splitlines():
        stamp, name = line.split()[:2]
        calls[name] = calls.get(name, 0) + 1
        late += float(stamp) > started + 30
    return calls, elapsed, done, late


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scheduler_load", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks.md"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shims = folder / "bin"
        shims.mkdir()
        log = _wrappers(shims)
        env = dict(os.environ, PATH=f"{shims}:{os.environ['PATH']}")
        (folder / "a").mkdir()
        submit_s = submission_time(folder / "a", env, shims)
        (folder / "b").mkdir()
        calls, elapsed, done, late = running_load(folder / "b", env, shims, log)
    total = sum(calls.values())
    per_minute = total / (elapsed / 60)
    listing = ", ".join(f"{name} {n}" for name, n in sorted(calls.items()))
    text = (
        "## Scheduler load\n\n"
        "`python -m benchmarks.scheduler_load` on the 2-node test cluster "
        "(`scripts/slurm-test-cluster.sh`).\n\n"
        f"- `optimize.py` with `jobs: 64` (one job array), from interpreter start to the array submitted: "
        f"**{submit_s:.2f} s**, one `sbatch` call.\n"
        f"- A 64-worker study (16 array tasks x 4 workers, 12 s trials, {done} trials in {elapsed:.0f} s): "
        f"**{total} scheduler calls in all, {per_minute:.1f} per minute** ({listing}); the "
        f"script's own `squeue` polling to see the jobs end is not counted. After the first 30 s "
        f"(submission and job starts): **{late} calls in {max(elapsed - 30, 0):.0f} s**. Each job asks "
        "`squeue` once for its end time. All workers here share one host, so dead workers are found "
        "by process id with no queue query; across hosts the workers of a study share at most one "
        "queue query a minute (a file in save_path holds the answer; tests/test_liveness.py).\n\n"
        f"Measured {datetime.date.today()}, Slurm {_slurm_version()}.\n"
    )
    print(text)
    write_section(args.output, "scheduler", text)
    return 0


def _slurm_version() -> str:
    return subprocess.run(["sbatch", "--version"], capture_output=True, text=True).stdout.strip()

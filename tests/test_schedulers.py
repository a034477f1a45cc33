"""Schedulers as plug-ins: every registered scheduler against a fake command runner, and a made-up
scheduler, defined in this file, that runs a whole study with no change to the package."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from aimlutils.hyper_opt import schedulers
from aimlutils.hyper_opt.config import ConfigError, load_config
from aimlutils.hyper_opt.launchers import batch_launcher, read_jobs
from aimlutils.hyper_opt.schedulers import JobEnvironment, Scheduler
from aimlutils.hyper_opt.storage import StorageSpec, open_storage
from tests.conftest import ROOT, run_optimize

QUEUE_DIR_ENV = "FAKE_SCHEDULER_DIR"


def _fake_queue_file() -> Path:
    return Path(os.environ[QUEUE_DIR_ENV]) / "queue.json"


def _fake_jobs() -> dict[str, int]:
    try:
        return json.loads(_fake_queue_file().read_text())
    except (OSError, ValueError):
        return {}


def fake_runner(command: Sequence[str]) -> str:
    """A scheduler in a file: ``fakesub SCRIPT`` starts the script with bash, ``fakeq`` lists the
    jobs whose bash still runs, ``fakedel ID...`` kills them."""
    jobs = _fake_jobs()
    if command[0] == "fakesub":
        job_id = f"fake.{len(jobs) + 1}"
        env = {**os.environ, "FAKE_JOB_ID": job_id, "AIMLUTILS_JOB_INDEX": command[2]}
        proc = subprocess.Popen(["bash", command[1]], env=env, start_new_session=True)
        jobs[job_id] = proc.pid
        _fake_queue_file().parent.mkdir(parents=True, exist_ok=True)
        _fake_queue_file().write_text(json.dumps(jobs))
        return f"submitted {job_id}\n"
    if command[0] == "fakeq":
        return "".join(f"{job} R\n" for job, pid in jobs.items() if Path(f"/proc/{pid}").exists())
    if command[0] == "fakedel":
        for job in command[1:]:
            os.killpg(jobs[job], signal.SIGTERM)
        return ""
    raise AssertionError(f"unexpected command {command}")


class FakeScheduler(Scheduler):
    """The whole of a new scheduler: one class."""

    name = "fakesched"
    submit_program = "bash"  # what really runs the scripts here
    directive = "#FAKE"
    gpu_request_hint = "fakesched.batch.gpus"

    def __init__(self, section: Any = None, save_path: Path | None = None, run: Any = fake_runner) -> None:
        super().__init__(section, save_path, run)

    @classmethod
    def requested_gpus(cls, batch: Mapping[str, Any]) -> int | None:
        return int(batch["gpus"]) if "gpus" in batch else None

    @classmethod
    def job_environment(cls, environ: Mapping[str, str]) -> JobEnvironment | None:
        job = environ.get("FAKE_JOB_ID")
        return JobEnvironment(cls.name, job) if job else None

    def header(self, n_jobs: int, jobs_dir: Path) -> list[str]:
        return self.option_lines()

    def submissions(self, script: Path, n_jobs: int) -> list[list[str]]:
        return [["fakesub", str(script), str(i)] for i in range(n_jobs)]

    def parse_job_id(self, stdout: str) -> str:
        return stdout.split()[-1]

    def queue(self, job_ids: Sequence[str]) -> dict[str, str]:
        states = dict(line.split() for line in self.run(["fakeq"]).splitlines())
        return {job: state for job, state in states.items() if job.split("_")[0] in job_ids}

    def cancel(self, job_ids: Sequence[str]) -> None:
        self.run(["fakedel", *job_ids])


class Recorder:
    """A fake command runner: records commands, answers with canned output."""

    def __init__(self, answers: Mapping[str, str]) -> None:
        self.answers = answers
        self.commands: list[list[str]] = []

    def __call__(self, command: Sequence[str]) -> str:
        self.commands.append(list(command))
        return self.answers.get(command[0], "")


# Per scheduler: its section, the programs' canned output, and what must come of it.
CASES = {
    "slurm": (
        {"jobs": 2, "batch": {"t": "10", "gres": "gpu:2"}, "gpus_per_node": 2},
        {
            "sbatch": "4242;testcluster\n",
            # Suspended (gang scheduling, suspend-mode preemption) and stopped jobs come back.
            "squeue": "4242_0 RUNNING\n4242_1 PENDING\n4242_2 SUSPENDED\n4242_3 STOPPED\n77 COMPLETED\n",
        },
        ["sbatch"],
        {"4242_0": "RUNNING", "4242_1": "PENDING", "4242_2": "SUSPENDED", "4242_3": "STOPPED"},
        ("4242", "4242_1"),
        "scancel",
    ),
    "pbs": (
        {"jobs": 2, "batch": {"l": ["select=1:ncpus=4:ngpus=2", "walltime=00:10:00"]}, "gpus_per_node": 2},
        {"qsub": "81.pbs-server\n", "qstat": "Job id Name User Time S Queue\n---\n81.pbs-server h u 0 R q\n"},
        ["qsub", "qsub"],
        {"81.pbs-server": "R", "81": "R"},
        ("81.pbs-server",),
        "qdel",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_every_scheduler_submits_parses_and_queries_through_its_runner(name, study_files):
    section, answers, submits, queue, live, cancel = CASES[name]
    hyper, model = study_files(gpu=True, sections={name: section})
    cfg = load_config(hyper, model)
    launcher = batch_launcher(cfg)
    assert launcher is not None and launcher.scheduler.name == name
    runner = Recorder(answers)
    launcher.scheduler.run = runner
    assert launcher.launch(4) == 0
    assert [c[0] for c in runner.commands] == submits
    recorded = read_jobs(cfg.paths)
    assert recorded and all(r.job_id for r in recorded)
    asked = [r.job_id for r in recorded]
    assert launcher.scheduler.queue(asked) == queue
    if name == "slurm":  # asked about the study's jobs (PBS's qstat lists all, kept to them here)
        assert any(asked[0] in word for word in runner.commands[-1]), runner.commands[-1]
    assert launcher.scheduler.queue([]) == {}  # nothing recorded: nothing asked
    assert all(launcher.scheduler.job_alive(j, queue) for j in live)
    launcher.scheduler.cancel(["1"])
    assert runner.commands[-1][0] == cancel


def test_an_unknown_scheduler_section_is_a_config_error(study_files):
    hyper, model = study_files(sections={"lsf": {"jobs": 2}})
    with pytest.raises(ConfigError) as err:
        load_config(hyper, model)
    text = str(err.value)
    assert "lsf: unknown key" in text and "slurm" in text and "pbs" in text


def test_a_registered_scheduler_gets_its_section_and_checks(study_files):
    schedulers.register(FakeScheduler)
    try:
        hyper, model = study_files(sections={"fakesched": {"gpus_per_node": 2}})
        with pytest.raises(ConfigError) as err:
            load_config(hyper, model)
        assert (
            "fakesched.gpus_per_node: 2 GPUs per job, but no GPU is requested in fakesched.batch.gpus"
            in str(err.value)
        )
    finally:
        schedulers.unregister("fakesched")


def _plugin_env(tmp_path: Path) -> dict[str, str]:
    """An environment in which every process finds FakeScheduler, as for an installed plug-in."""
    site = tmp_path / "site"
    dist = site / "fake_scheduler-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-scheduler\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[{schedulers.ENTRY_POINT_GROUP}]\nfakesched = tests.test_schedulers:FakeScheduler\n"
    )
    path = os.pathsep.join(p for p in (str(site), str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, QUEUE_DIR_ENV: str(tmp_path / "fake-queue")}


def test_a_made_up_scheduler_runs_a_study_to_exactly_n_trials(study_files, tmp_path):
    env = _plugin_env(tmp_path)
    section = {"jobs": 2, "tasks_per_worker": 2, "batch": {"flavour": "small"}}
    hyper, model = study_files(test={"sleep": 0.2}, sections={"fakesched": section}, n_trials=12)
    dry = run_optimize(hyper, model, "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "#FAKE --flavour=small" in dry.stdout and "# submit: fakesub" in dry.stdout
    proc = run_optimize(hyper, model, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Submitted 2 job(s) of 2 worker(s)" in proc.stdout
    saved = yaml.safe_load((tmp_path / "results/configs/hyper.yml").read_text())
    storage = open_storage(StorageSpec("journal", saved["optuna"]["storage"]))
    study = optuna.load_study(study_name=saved["optuna"]["name"], storage=storage)
    deadline = time.monotonic() + 240
    jobs = json.loads((tmp_path / "fake-queue/queue.json").read_text())
    while any(Path(f"/proc/{pid}").exists() for pid in jobs.values()) and time.monotonic() < deadline:
        time.sleep(0.5)
    states = [t.state for t in study.get_trials()]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 12 and len(states) == 12
    owners = {t.user_attrs["record"]["worker"]["job_id"] for t in study.get_trials()}
    assert owners == {"fake.1", "fake.2"}  # each job's workers knew their job from its environment
    status = subprocess.run(
        [os.sys.executable, str(ROOT / "optimize.py"), "status", str(hyper)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert status.returncode == 0 and "12/12" in status.stdout and "fake.1" in status.stdout

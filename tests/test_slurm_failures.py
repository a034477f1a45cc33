"""Around the workers on the real test cluster: a study that cannot succeed ends its jobs, and a
scheduler that does not answer fails no trial."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aimlutils.hyper_opt.coordination import StudyStop
from tests.conftest import ROOT
from tests.test_slurm import (  # noqa: F401 - cancel_leftover_jobs is a fixture, used by pytestmark
    _job_field,
    cancel_leftover_jobs,
    command,
    config,
    counts,
    done,
    finish,
    job_ids,
    slurm,
    study_of,
    submit_objective,
)

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster", "cancel_leftover_jobs")]

TYPO = """
from aimlutils.hyper_opt.base_objective import *


class Objective(BaseObjective):
    def train(self, trial, conf):
        raise RuntimeError("typo in my training script")
"""


def test_a_study_whose_objective_always_fails_ends_its_jobs_without_requeueing(tmp_path):
    hyper_path, cfg = submit_objective(tmp_path, TYPO, slurm(2, 2), n_trials=20, gpu=True)
    study = finish(cfg, timeout=240)
    ids = job_ids(cfg)
    # Read as soon as they left the queue: slurmctld keeps them for MinJobAge.
    restarts = {job: _job_field(job, "Restarts") for job in ids}
    assert set(restarts.values()) <= {"0", "gone"} and "0" in restarts.values(), restarts
    assert counts(study) == {"FAIL": len(study.trials)} and 20 <= len(study.trials) <= 24, counts(study)
    stop = StudyStop.read(cfg.paths.stopped)
    assert stop is not None and "typo in my training script" in stop.last_error
    status = command("status", hyper_path)
    assert "The study stopped: its last" in status.stdout, status.stdout + status.stderr


def test_a_status_whose_squeue_fails_fails_no_trial(study_files, held, tmp_path):
    """A busy slurmctld times out: the status shows what it can and judges nothing by the queue."""
    test = {"sleep": 0.5, **held.knobs(4)}
    hyper, model = study_files(test=test, n_trials=16, gpu=True, sections=slurm(2, 2))
    assert command(hyper, model).returncode == 0
    cfg = config(hyper, model)
    held.wait(4)  # four trials running, one per worker, on both nodes
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "squeue").write_text(
        "#!/bin/sh\necho 'slurm_load_jobs error: Socket timed out on send/recv operation' >&2\nexit 1\n"
    )
    (fake / "squeue").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    status = subprocess.run(
        [sys.executable, str(ROOT / "optimize.py"), "status", str(hyper)],
        capture_output=True,
        text=True,
        cwd=Path(hyper).parent,
        env=env,
        timeout=120,
    )
    out = status.stdout + status.stderr
    assert status.returncode == 0, out
    assert "Could not read the queue, so no trial was judged by it" in out, out
    assert "FAIL" not in counts(study_of(cfg)), counts(study_of(cfg))
    held.release()
    study = finish(cfg, timeout=240)
    assert done(study) == 16 and "FAIL" not in counts(study), counts(study)
    assert not any("retry_of" in t.user_attrs for t in study.trials)  # nothing was run again

"""Nodes and wall time on the real test cluster: a node whose trials all fail is left out of the
study, and a worker starts no trial that could not reach a checkpoint before its job's end (its job
goes back in the queue instead)."""

from __future__ import annotations

import datetime
import json
import textwrap

import pytest
from optuna.trial import TrialState

from aimlutils.hyper_opt.coordination import BadNodes, StudyStop
from tests.test_slurm import (  # noqa: F401 - cancel_leftover_jobs is a fixture, used by pytestmark
    _job_field,
    cancel_leftover_jobs,
    command,
    counts,
    finish,
    job_ids,
    submit_objective,
)

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster", "cancel_leftover_jobs")]

BROKEN_ON_NODE2 = textwrap.dedent(
    """
    import os, time
    from aimlutils.hyper_opt.base_objective import *

    class Objective(BaseObjective):
        def train(self, trial, conf):
            if os.environ.get("SLURMD_NODENAME") == "node2":  # its GPU is broken
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            time.sleep(1.0)
            return {"val_loss": (conf["optimizer"]["learning_rate"] - 0.3) ** 2}
    """
)


def test_a_node_that_fails_every_trial_is_excluded_and_the_study_ends_on_the_other(tmp_path):
    # Two jobs of two workers, each taking a whole node (its 8 CPUs): one on node1, one on node2.
    batch = {"gres": "gpu:2", "t": "5", "cpus-per-task": 8}
    sections = {"slurm": {"jobs": 2, "gpus_per_node": 2, "batch": batch}}
    hyper_path, cfg = submit_objective(tmp_path, BROKEN_ON_NODE2, sections, n_trials=8, gpu=True)
    study = finish(cfg, timeout=240)

    trials = study.get_trials()
    node = {t.number: t.user_attrs["record"]["worker"]["node"] for t in trials if "record" in t.user_attrs}
    complete = [t.number for t in trials if t.state == TrialState.COMPLETE]
    failed = [t.number for t in trials if t.state == TrialState.FAIL]
    assert len(complete) == 8 and {node[n] for n in complete} == {"node1"}, counts(study)
    assert failed and {node[n] for n in failed} == {"node2"}, counts(study)
    assert "RUNNING" not in counts(study) and StudyStop.read(cfg.paths.stopped) is None
    marks = BadNodes(cfg.paths.bad_nodes).marks()
    assert list(marks) == ["node2"] and "CUDA error" in marks["node2"].last_error
    # The job on node2 left and put itself back in the queue, keeping off node2: it ran on node1.
    (array,) = job_ids(cfg)
    (moved,) = {t.user_attrs["record"]["worker"]["job_id"] for t in trials if t.number in failed}
    assert moved.startswith(f"{array}_")
    assert _job_field(moved, "ExcNodeList") == "node2" and _job_field(moved, "Restarts") == "1"
    assert _job_field(moved, "NodeList") == "node1"

    status = command("status", hyper_path)
    out = status.stdout + status.stderr
    assert status.returncode == 0 and "marked bad" in out and "node2" in out, out


# A trial reaches its first (and only) checkpoint 45 s after it starts, and notes when it started
# and when its job must end.
FIRST_CHECKPOINT_AT_45_S = textwrap.dedent(
    """
    import json, os, time
    from aimlutils.hyper_opt.base_objective import *

    class Objective(BaseObjective):
        def train(self, trial, conf):
            start = {"trial": trial.number, "start": time.time(), "job_end": os.environ["AIMLUTILS_JOB_END"]}
            with open(os.path.join(os.environ["STARTS_DIR"], f"{trial.number}.json"), "w") as fh:
                json.dump(start, fh)
            time.sleep(45)  # set-up and one epoch
            self.checkpoint_saved()
            return {"val_loss": (conf["optimizer"]["learning_rate"] - 0.3) ** 2}
    """
)


def test_no_trial_starts_in_the_last_45_s_of_a_job_and_the_job_comes_back_for_the_rest(tmp_path, monkeypatch):
    starts = tmp_path / "starts"
    starts.mkdir()
    monkeypatch.setenv("STARTS_DIR", str(starts))  # sbatch hands the jobs this environment
    two_minutes = {"slurm": {"jobs": 1, "gpus_per_node": 2, "batch": {"gres": "gpu:2", "t": "2"}}}
    _, cfg = submit_objective(tmp_path, FIRST_CHECKPOINT_AT_45_S, two_minutes, n_trials=6, gpu=True)
    (job,) = job_ids(cfg)
    study = finish(cfg, timeout=600)
    restarts = _job_field(job, "Restarts")
    assert counts(study) == {"COMPLETE": 6}, counts(study)
    assert restarts != "gone" and int(restarts) >= 1, restarts  # it went back in the queue

    noted = [json.loads(path.read_text()) for path in sorted(starts.glob("*.json"))]
    assert len(noted) == 6
    for start in noted:
        left = datetime.datetime.fromisoformat(start["job_end"]).timestamp() - start["start"]
        assert left >= 45, f"trial {start['trial']} started {left:.0f} s before its job's end"
    # The rule was met, not only kept by chance: a worker found no room for a first checkpoint.
    log = cfg.log_file.read_text() if cfg.log_file else ""
    assert "to its first checkpoint on cpu" in log, log
    assert all(t.state == TrialState.COMPLETE for t in study.trials)  # none was cut

"""Big trials on the real test cluster: several GPUs per trial, and torch trials longer than their
jobs that continue job after job (time limit, preemption, node loss) without the user's help."""

from __future__ import annotations

import itertools
import json
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from aimlutils.hyper_opt.config import RunConfig
from aimlutils.hyper_opt.coordination import origin_of
from aimlutils.hyper_opt.report._curves import curves
from tests.conftest import MODEL, cluster, hyper_config, needs_module
from tests.conftest import OBJECTIVE as PLAIN_OBJECTIVE
from tests.test_slurm import (  # noqa: F401 - cancel_leftover_jobs is a fixture, used by pytestmark
    _job_field,
    assert_interrupted_trials_were_rerun,
    cancel_leftover_jobs,
    command,
    config,
    counts,
    done,
    finish,
    job_ids,
    queued,
    study_of,
    wait_for,
)

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster", "cancel_leftover_jobs")]

# Writes down what each trial saw, as JSON lines in test.log_dir: spans.jsonl (where and when it
# ran, on which GPUs) and epochs.jsonl (each epoch started and finished, by chain of continued
# trials); after epoch k of a chain it touches <chain>-epoch<k>, the tests' event to act on. With
# hold_at: k, a trial waits after saving epoch k until the file `release` appears: the test stops it
# there, mid-trial, whatever the machine's load.
OBJECTIVE = textwrap.dedent(
    """
    import json, os, socket, time
    from pathlib import Path
    from aimlutils.hyper_opt.base_objective import BaseObjective

    def note(path, **entry):
        with open(path, "a") as fh:
            fh.write(json.dumps(entry) + "\\n")

    class Objective(BaseObjective):
        def train(self, trial, conf):
            test, started = conf["test"], time.time()
            log = Path(test["log_dir"])
            if "epochs" in test:
                loss = self.epochs(trial, test, log)
            else:
                loss = self.hold(trial, test, log)
            note(
                log / "spans.jsonl", trial=trial.number, start=started, end=time.time(),
                node=os.environ.get("SLURMD_NODENAME"), host=socket.gethostname(),
                gpus=os.environ.get("CUDA_VISIBLE_DEVICES", ""), pid=os.getpid(), seen=self.gpus,
            )
            return {"val_loss": loss}

        def hold(self, trial, test, log):
            # The first `together` trials wait for each other: that many run at the same time.
            if trial.number < test["together"]:
                (log / f"inside-{trial.number}").touch()
                deadline = time.time() + 120
                while len(list(log.glob("inside-*"))) < test["together"] and time.time() < deadline:
                    time.sleep(0.1)
            time.sleep(test["sleep"])
            return conf_loss(trial)

        def epochs(self, trial, test, log):
            import torch
            from aimlutils.hyper_opt.utils import TorchCheckpoint, report_and_prune

            torch.manual_seed(0)
            model = torch.nn.Linear(4, 1)
            optimizer = torch.optim.SGD(model.parameters(), lr=trial.params["lr"])
            x = torch.randn(64, 4)
            checkpoint = TorchCheckpoint(self.checkpoint_dir(trial), model, optimizer)
            chain = self.checkpoint_dir(trial).name
            for epoch in range(checkpoint.epoch, test["epochs"]):
                note(
                    log / "epochs.jsonl", chain=chain, trial=trial.number, epoch=epoch, event="start",
                    node=os.environ.get("SLURMD_NODENAME"), job=os.environ.get("SLURM_JOB_ID"),
                )
                optimizer.zero_grad()
                loss = torch.nn.functional.mse_loss(model(x), x.sum(1, keepdim=True))
                loss.backward()
                optimizer.step()
                time.sleep(test["epoch_s"])  # a real epoch's length
                report_and_prune(trial, loss.item(), epoch)
                checkpoint.save(epoch)
                note(log / "epochs.jsonl", chain=chain, trial=trial.number, epoch=epoch, event="end")
                (log / f"{chain}-epoch{epoch}").touch()
                while epoch == test.get("hold_at") and not (log / "release").exists():
                    time.sleep(0.1)
                if epoch + 1 < test["epochs"]:  # after the last one the trial is done, not stopped
                    self.stop_if_requested()
            # From the model, which a continued trial restored even when no epoch was left.
            return torch.nn.functional.mse_loss(model(x), x.sum(1, keepdim=True)).item()

    def conf_loss(trial):
        return (trial.params["lr"] - 0.3) ** 2
    """
)


def study(
    folder: Path,
    test: dict[str, Any],
    slurm: dict[str, Any],
    objective_text: str = OBJECTIVE,
    **optuna_section: Any,
) -> tuple[Path, Path, Path]:
    """hyper.yml, model.yml and the log folder of a study in ``folder`` of :data:`OBJECTIVE` (or
    of ``objective_text``, given ``test.log_dir`` too)."""
    log = folder / "log"
    log.mkdir(parents=True)
    objective = folder / "objective.py"
    objective.write_text(objective_text)
    data = hyper_config(folder / "results", objective, pruner={"type": "NopPruner"}, **optuna_section)
    data["slurm"] = slurm
    hyper, model = folder / "hyper.yml", folder / "model.yml"
    hyper.write_text(yaml.safe_dump(data, sort_keys=False))
    model.write_text(yaml.safe_dump(dict(MODEL, test={**test, "log_dir": str(log)}), sort_keys=False))
    return hyper, model, log


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def submit(hyper: Path, model: Path) -> RunConfig:
    proc = command(hyper, model)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return config(hyper, model)


# Several GPUs per trial.


def test_two_jobs_of_four_gpus_run_four_workers_of_two_gpus_that_never_share_one(tmp_path):
    slurm = {"jobs": 2, "gpus_per_node": 4, "gpus_per_trial": 2, "batch": {"gres": "gpu:4", "t": "10"}}
    hyper, model, log = study(tmp_path, {"sleep": 1.0, "together": 4}, slurm, n_trials=8, gpu=True)
    proc = command(hyper, model)
    assert proc.returncode == 0 and "Submitted 2 job(s) of 2 worker(s)" in proc.stdout, proc.stdout
    cfg = config(hyper, model)
    assert counts(finish(cfg, 180)) == {"COMPLETE": 8}
    spans = lines(log / "spans.jsonl")
    assert len(spans) == 8
    assert len({(s["node"], s["pid"]) for s in spans}) == 4  # 4 workers in all
    assert {s["node"] for s in spans} == {"node1", "node2"} and all(s["host"] == s["node"] for s in spans)
    for s in spans:
        ids = s["gpus"].split(",")
        assert len(set(ids)) == 2 and s["seen"] == 2, s
    overlapping = 0
    for a, b in itertools.combinations(spans, 2):
        if a["start"] < b["end"] and b["start"] < a["end"]:  # they ran at the same time
            overlapping += 1
            assert not _node_gpus(a) & _node_gpus(b), (a, b)
    assert overlapping >= 6  # the first 4 trials ran together: every pair of them overlaps


def _node_gpus(span: dict[str, Any]) -> set[tuple[str, str]]:
    return {(span["node"], gpu) for gpu in span["gpus"].split(",")}


# Torch trials longer than their jobs.


def check_chains(study_: optuna.Study, log: Path, epochs: int = 8) -> dict[int, list[int]]:
    """Every chain of continued trials trained each epoch once, plus at most one per interruption,
    and reported steps 0 .. epochs - 1 with no gap; its last trial completed. Returns
    ``{first trial of the chain: its trials}``."""
    chains: dict[int, list[int]] = {}
    for t in study_.trials:
        chains.setdefault(origin_of(t), []).append(t.number)
    started: dict[str, list[int]] = {}
    for entry in lines(log / "epochs.jsonl"):
        if entry["event"] == "start":
            started.setdefault(entry["chain"], []).append(entry["epoch"])
    for origin, numbers in chains.items():
        trials = [study_.trials[n] for n in numbers]
        *interrupted, last = trials
        assert last.state == TrialState.COMPLETE and all(t.state == TrialState.FAIL for t in interrupted)
        assert sorted(last.intermediate_values) == list(range(epochs)), last.intermediate_values
        for t in interrupted:  # each stopped after a run of steps from 0, never past a gap
            assert sorted(t.intermediate_values) == list(range(len(t.intermediate_values)))
        runs = started[f"trial_{origin}"]
        assert sorted(set(runs)) == list(range(epochs))
        assert len(runs) <= epochs + len(interrupted), (origin, runs)
    return chains


def test_jobs_whose_time_is_up_requeue_themselves_until_their_studies_are_done(tmp_path):
    """Three studies at once in jobs with a 1-minute limit, each done with no reload.

    torch: 8 epochs of 10 s; each job gets the warning (15 s before its limit: time for the epoch
    under way to end), its trials save and leave, and it puts itself back in the queue. between:
    trials of 20 s; a worker starts no trial that would not finish, and its job, leaving before its
    limit, puts itself back in the queue. cut: a trial of 200 s that ignores the warning; killed at
    the limit, failed and queued again; the job puts itself back in the queue (its SIGTERM came
    from the limit), and the re-run finishes it.
    """
    needs_module("torch")
    one_minute = {"jobs": 1, "batch": {"t": "1"}}
    torch_files = study(
        tmp_path / "torch", {"epochs": 8, "epoch_s": 10}, {**one_minute, "jobs": 2}, n_trials=2
    )
    plain = {"objective_text": PLAIN_OBJECTIVE, "n_trials": 2}
    between = study(tmp_path / "between", {"sleep": 10, "steps": 2}, one_minute, **plain)
    cut_test = {"sleep": 20, "steps": 10, "fast_trials": 1, "fast_retries": True}
    cut = study(tmp_path / "cut", cut_test, one_minute, **plain)
    cfg, cfg_between, cfg_cut = (submit(hyper, model) for hyper, model, _ in (torch_files, between, cut))
    (array,) = job_ids(cfg)
    tasks = [f"{array}_{i}" for i in range(2)]
    (job_between,), (job_cut,) = job_ids(cfg_between), job_ids(cfg_cut)
    ended = _left_queue({job_between: [job_between], job_cut: [job_cut], array: tasks}, 900)
    print(f"job state and restarts as each left the queue: {ended}")
    for job in (job_between, job_cut, *tasks):
        state, restarts = ended[job]
        assert state == "COMPLETED" and int(restarts) >= 1, (job, state, restarts)

    assert counts(study_of(cfg_between)) == {"COMPLETE": 2}  # no trial was cut short

    study_cut = study_of(cfg_cut)
    (interrupted,) = [t for t in study_cut.trials if t.state == TrialState.FAIL]
    assert interrupted.user_attrs["record"]["fail_reason"].startswith("interrupted")
    assert done(study_cut) == 2 and "RUNNING" not in counts(study_cut)
    assert_interrupted_trials_were_rerun(study_cut)

    study_ = study_of(cfg)
    log = torch_files[2]
    chains = check_chains(study_, log)
    assert len(chains) == 2 and all(len(n) >= 2 for n in chains.values()), chains  # several jobs each
    c = counts(study_)
    assert c["COMPLETE"] == 2 and "RUNNING" not in c
    jobs = {e["job"] for e in lines(log / "epochs.jsonl") if e["event"] == "start"}
    print(f"chains {chains}; job ids {sorted(jobs)}")
    # The report draws one curve per chain: its last trial's, from step 0 to 7.
    assert sorted((c.number, c.steps) for c in curves(study_)) == sorted(
        (numbers[-1], tuple(range(8))) for numbers in chains.values()
    )
    report = command("report", torch_files[0])
    assert report.returncode == 0, report.stdout + report.stderr
    assert "Continued trials" in report.stdout


def _left_queue(jobs: dict[str, list[str]], timeout: float) -> dict[str, tuple[str, str]]:
    """Wait until every job of ``{job id: the ids to look at}`` has left the queue; the JobState and
    Restarts of each id to look at as its job left (slurmctld forgets a job MinJobAge s later)."""
    ended: dict[str, tuple[str, str]] = {}

    def all_left() -> bool:
        running = set(queued(list(jobs)))
        for job, ids in jobs.items():
            if ids[0] not in ended and not any(j.split("_")[0] == job for j in running):
                ended.update({i: (_job_field(i, "JobState"), _job_field(i, "Restarts")) for i in ids})
        return all(i in ended for ids in jobs.values() for i in ids)

    wait_for(all_left, timeout, f"jobs {sorted(jobs)} to end")
    return ended


def _wait_for_epoch(log: Path, chains: list[int], epoch: int) -> None:
    wait_for(
        lambda: all((log / f"trial_{n}-epoch{epoch}").exists() for n in chains),
        180,
        f"epoch {epoch} of trials {chains}",
    )


def _wait_for_failed(cfg: RunConfig, numbers: list[int], timeout: float) -> None:
    wait_for(
        lambda: all(study_of(cfg).trials[n].state == TrialState.FAIL for n in numbers),
        timeout,
        f"trials {numbers} to be failed",
    )


# Short epochs: each trial waits after epoch 2 (hold_at) until the test has stopped it there.
SHORT = {"epochs": 8, "epoch_s": 1, "hold_at": 2}


def test_a_preempted_job_comes_back_and_its_torch_trials_continue_from_their_checkpoints(tmp_path):
    needs_module("torch")
    slurm = {"jobs": 1, "tasks_per_worker": 2, "batch": {"t": "10"}}
    hyper, model, log = study(tmp_path, SHORT, slurm, n_trials=2)
    cfg = submit(hyper, model)
    (job,) = job_ids(cfg)
    _wait_for_epoch(log, [0, 1], 2)
    subprocess.run(["scontrol", "requeue", job], check=True)
    _wait_for_failed(cfg, [0, 1], 120)
    (log / "release").touch()
    study_ = finish(cfg, 240)
    chains = check_chains(study_, log)
    assert sorted(len(n) for n in chains.values()) == [2, 2], chains  # each continued once
    assert _job_field(job, "Restarts") == "1"  # Slurm's requeue, and not one more by the job itself


def test_torch_trials_on_a_lost_node_continue_from_their_checkpoints_on_the_other(tmp_path):
    needs_module("torch")
    slurm = {"jobs": 1, "tasks_per_worker": 2, "batch": {"t": "10"}}
    hyper, model, log = study(tmp_path, SHORT, slurm, n_trials=2)
    cfg = submit(hyper, model)
    _wait_for_epoch(log, [0, 1], 2)
    (victim,) = {e["node"] for e in lines(log / "epochs.jsonl") if e["event"] == "start"}  # one job
    try:
        cluster("kill-node", victim)
        killed = time.monotonic()
        # Marked DOWN at once, as a node health check would: Slurm requeues the job now, not after
        # missed pings (SlurmdTimeout, which test_slurm.py's node-loss tests wait out).
        subprocess.run(["scontrol", "update", f"nodename={victim}", "state=down", "reason=lost"], check=True)
        _wait_for_failed(cfg, [0, 1], 180)
        (log / "release").touch()
        study_ = finish(cfg, 240)
        print(f"{victim} killed at epoch 2: the study done {time.monotonic() - killed:.0f} s later")
    finally:
        cluster("revive-node", victim)
    chains = check_chains(study_, log)
    assert sorted(len(n) for n in chains.values()) == [2, 2], chains
    for numbers in chains.values():
        reason = study_.trials[numbers[0]].user_attrs["record"]["fail_reason"]
        assert f"host {victim}) ended during the trial" in reason, reason
        last = study_.trials[numbers[-1]].user_attrs["record"]["worker"]
        assert last["node"] != victim

"""The SLURM launcher against the project's real 2-node test cluster (scripts/slurm-test-cluster.sh)."""

from __future__ import annotations

import itertools
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from aimlutils.hyper_opt.config import RunConfig, load_config
from aimlutils.hyper_opt.storage import open_storage
from tests.conftest import MODEL, ROOT, cluster, hyper_config, node_pid, service_url

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster", "cancel_leftover_jobs")]


@pytest.fixture
def cancel_leftover_jobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A failed test must not leave jobs holding the cluster's GPUs for the next one: they are
    cancelled, and the next test starts once they have left the queue (a cancelled job holds its
    node until its processes are gone; the next test's jobs would wait behind it)."""
    yield
    base = tmp_path_factory.getbasetemp()
    ids = [job["job_id"] for path in base.rglob("jobs.json") for job in json.loads(path.read_text())]
    if not ids:
        return
    subprocess.run(["scancel", *ids], capture_output=True, check=False)
    ours = {str(i).partition("_")[0] for i in ids}
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        queue = subprocess.run(["squeue", "-h", "-o", "%F"], capture_output=True, text=True)  # array job ids
        if queue.returncode == 0 and not ours & set(queue.stdout.split()):
            return
        time.sleep(1)


def run(hyper: Path, model: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return command(str(hyper), model, *args)


def command(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``optimize.py ARGS`` in the directory of the hyper.yml among them."""
    hyper = next(Path(a) for a in args if str(a).endswith("hyper.yml"))
    return subprocess.run(
        [sys.executable, str(ROOT / "optimize.py"), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=hyper.parent,
        timeout=120,
    )


def slurm(jobs: int, gpus: int, **batch: Any) -> dict[str, Any]:
    return {
        "slurm": {"jobs": jobs, "gpus_per_node": gpus, "batch": {"gres": f"gpu:{gpus}", "t": "10", **batch}}
    }


def config(hyper: Path, model: Path) -> RunConfig:
    return load_config(hyper, model, base_dir=hyper.parent)


def study_of(cfg: RunConfig) -> optuna.Study:
    return optuna.load_study(study_name=cfg.study_name, storage=open_storage(cfg.storage))


def job_ids(cfg: RunConfig) -> list[str]:
    return [job["job_id"] for job in json.loads((cfg.save_path / "jobs.json").read_text())]


def queued(ids: list[str]) -> list[str]:
    """Which of ``ids`` are in the queue; all of them while slurmctld does not answer (on a loaded
    machine it may time out now and then), so that a wait goes on."""
    proc = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True)
    if proc.returncode != 0:
        return list(ids)
    return [j for j in proc.stdout.split() if j.split("_")[0] in ids]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.5)


def counts(study: optuna.Study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def done(study: optuna.Study) -> int:
    c = counts(study)
    return c.get("COMPLETE", 0) + c.get("PRUNED", 0)


def finish(cfg: RunConfig, timeout: float = 150) -> optuna.Study:
    """Wait until the study's jobs have left the queue; return the study."""
    wait_for(lambda: not queued(job_ids(cfg)), timeout, "the jobs to end")
    return study_of(cfg)


def submit_objective(
    folder: Path, objective_text: str, sections: dict[str, Any], **optuna_section: Any
) -> tuple[Path, RunConfig]:
    """Submit a study of ``objective_text`` (files in ``folder``) with the scheduler ``sections``;
    its hyper.yml and config."""
    objective = folder / "objective.py"
    objective.write_text(objective_text)
    hyper = {**hyper_config(folder / "results", objective, **optuna_section), **sections}
    hyper_path, model_path = folder / "hyper.yml", folder / "model.yml"
    hyper_path.write_text(yaml.safe_dump(hyper))
    model_path.write_text(yaml.safe_dump(MODEL))
    proc = command(hyper_path, model_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return hyper_path, config(hyper_path, model_path)


def submit_and_finish(hyper: Path, model: Path, says: str) -> tuple[RunConfig, optuna.Study]:
    """Run optimize.py, check what it printed, and wait for its jobs to end."""
    proc = run(hyper, model)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert says in proc.stdout
    cfg = config(hyper, model)
    return cfg, finish(cfg)


def csv_count(cfg: RunConfig) -> int:
    return len(cfg.csv_path.read_text().splitlines()) - 1


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))


def assert_interrupted_trials_were_rerun(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    for trial in failed:
        reruns = [t for t in study.trials if t.user_attrs.get("retry_of") == trial.number]
        assert reruns, f"trial {trial.number} ({trial.user_attrs.get('record')}) was not queued again"
        assert any(t.params == trial.params and t.state == TrialState.COMPLETE for t in reruns)
    return failed


def test_two_jobs_of_four_gpus_run_eight_workers_each_on_its_own_node_and_gpu(study_files):
    hyper, model = study_files(test={"sleep": 1.0, "steps": 2}, n_trials=24, gpu=True, sections=slurm(2, 4))
    cfg, study = submit_and_finish(hyper, model, "Submitted 2 job(s) of 4 worker(s)")
    assert counts(study) == {"COMPLETE": 24}
    by_pair: dict[tuple[str, str], list[optuna.trial.FrozenTrial]] = {}
    for t in study.trials:
        worker = t.user_attrs["record"]["worker"]
        assert worker["host"] == worker["node"]  # each node is a host of its own
        by_pair.setdefault((worker["node"], worker["gpu"]), []).append(t)
    # Every (node, GPU) pair ran trials ...
    assert set(by_pair) == {(node, str(gpu)) for node in ("node1", "node2") for gpu in range(4)}
    for pair, trials in by_pair.items():
        # ... in one worker, and never two trials at once: one worker per GPU.
        assert len({t.user_attrs["record"]["worker"]["pid"] for t in trials}) == 1, pair
        spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
        assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(spans)), pair
    assert csv_count(cfg) == 24


@pytest.mark.parametrize("storage", ["journal", "sqlite", "postgresql"])
def test_scancel_and_kill_9_mid_trial_lose_nothing(study_files, held, storage):
    url = {"journal": None, "sqlite": "sqlite:///results/study.db", "postgresql": None}[storage]
    if storage == "postgresql":
        url = service_url("postgresql")
    extra = {"storage": url} if url else {}
    # Trials 0-3 wait inside the objective until released: one in each of the 4 workers.
    test = {"sleep": 0.75, "steps": 2, **held.knobs(4)}
    hyper, model = study_files(test=test, n_trials=10, gpu=True, sections=slurm(2, 2), **extra)
    assert run(hyper, model).returncode == 0
    cfg = config(hyper, model)
    (array,) = job_ids(cfg)
    inside = held.wait(4)
    assert sorted(o["job_id"] for o in inside.values()) == [f"{array}_0"] * 2 + [f"{array}_1"] * 2
    victim_number, victim = min((n, o) for n, o in inside.items() if o["job_id"] == f"{array}_0")
    os.kill(node_pid(victim["node"], victim["pid"]), signal.SIGKILL)
    subprocess.run(["scancel", f"{array}_1"], check=True)
    cancelled = [n for n, o in inside.items() if o["job_id"] == f"{array}_1"]
    wait_for(
        lambda: all(study_of(cfg).trials[n].state == TrialState.FAIL for n in cancelled),
        60,
        "the cancelled job's workers to fail their trials",
    )
    held.release()
    study = finish(cfg)
    c = counts(study)
    assert "RUNNING" not in c
    assert c.get("COMPLETE", 0) + c.get("PRUNED", 0) == 10
    failed = assert_interrupted_trials_were_rerun(study)
    reasons = {t.number: t.user_attrs["record"]["fail_reason"] for t in failed}
    assert "ended during the trial" in reasons[victim_number]
    assert any(r.startswith("interrupted") for r in reasons.values()), reasons
    assert csv_count(cfg) == len(finished(study))


def _job_field(job_id: str, name: str) -> str:
    """A field of ``scontrol show job`` ("gone" once the job left slurmctld's memory)."""
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    return next((f.split("=", 1)[1] for f in out.split() if f.startswith(f"{name}=")), "gone")


def test_status_cancel_and_reload_after_all_jobs_were_cancelled(study_files):
    hyper, model = study_files(test={"sleep": 1.0, "steps": 2}, n_trials=12, gpu=True, sections=slurm(2, 2))
    assert run(hyper, model).returncode == 0
    cfg = config(hyper, model)
    wait_for(lambda: counts(study_of(cfg)).get("RUNNING", 0) >= 4, 60, "four running trials")
    status = command("status", hyper)
    assert status.returncode == 0, status.stdout + status.stderr
    (array,) = job_ids(cfg)
    assert "Running trials" in status.stdout and f"{array}_" in status.stdout
    assert "RUNNING" in status.stdout  # the queue state of the array's tasks
    cancel = command("cancel", hyper)
    assert cancel.returncode == 0, cancel.stdout + cancel.stderr
    assert f"Cancelled 1 job(s): {array}" in cancel.stdout
    wait_for(lambda: not queued([array]), 30, "the cancelled jobs to leave the queue")
    study = study_of(cfg)
    assert "RUNNING" not in counts(study)
    assert done(study) < 12
    proc = run(hyper, model, "--reload")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Continuing study" in proc.stdout
    study = finish(cfg)
    assert done(study) == 12 and "RUNNING" not in counts(study)
    assert_interrupted_trials_were_rerun(study)
    assert csv_count(cfg) == len(finished(study))
    after = command("status", hyper)
    assert "12/12 done" in after.stdout and "ended" in after.stdout


def test_failed_sbatch_reports_command_exit_code_and_output(study_files):
    hyper, model = study_files(sections=slurm(1, 1, partition="no-such-partition"))
    proc = run(hyper, model)
    assert proc.returncode == 1
    assert "sbatch --parsable" in proc.stdout and "failed with exit code 1" in proc.stdout
    assert "invalid partition" in proc.stdout.lower()


def test_pbs_jobs_run_through_qsub(study_files):
    """Debian's qsub wrapper runs #PBS scripts on the Slurm test cluster: a smoke test of the
    PBS launcher end to end (the wrapper ignores select=/ngpus=, so no GPUs here)."""
    section = {"jobs": 2, "tasks_per_worker": 2, "batch": {"l": ["select=1:ncpus=2", "walltime=00:10:00"]}}
    hyper, model = study_files(test={"sleep": 0.5, "steps": 2}, n_trials=8, sections={"pbs": section})
    _, study = submit_and_finish(hyper, model, "Submitted 2 job(s) of 2 worker(s)")
    assert counts(study) == {"COMPLETE": 8}
    workers = {
        (t.user_attrs["record"]["worker"]["worker"], t.user_attrs["record"]["worker"]["job_id"])
        for t in study.trials
    }
    assert sorted(w for w, _ in workers) == [0, 1, 2, 3]
    assert len({j for _, j in workers}) == 2
    status = command("status", hyper)
    assert "8/8 done" in status.stdout and "ended" in status.stdout


def test_requeued_job_rejoins_the_study(study_files):
    """Preemption with requeue: the job's trial fails and is queued again, the job comes back."""
    hyper, model = study_files(test={"sleep": 1.0, "steps": 2}, n_trials=8, gpu=True, sections=slurm(1, 2))
    assert run(hyper, model).returncode == 0
    cfg = config(hyper, model)
    (job,) = job_ids(cfg)
    wait_for(lambda: counts(study_of(cfg)).get("RUNNING", 0) >= 2, 60, "running trials")
    subprocess.run(["scontrol", "requeue", job], check=True)
    study = finish(cfg, 150)
    c = counts(study)
    assert c.get("COMPLETE", 0) == 8 and "RUNNING" not in c
    failed = assert_interrupted_trials_were_rerun(study)
    assert failed and all(t.user_attrs["record"]["fail_reason"].startswith("interrupted") for t in failed)
    assert len({t.user_attrs["record"]["worker"]["pid"] for t in finished(study)}) == 4  # two runs of 2


# Run on a node of the cluster: what can a process there see of the process named in `token`?
PROBE = """
import json, os, socket, sys
from pathlib import Path

here = Path(sys.argv[1])
token = (here / "token").read_text()
pid = int((here / "pid").read_text())


def cmdline(p):
    try:
        return Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\\0", b" ").decode()
    except OSError:
        return ""


try:
    os.kill(pid, 0)
    signalable = True
except ProcessLookupError:
    signalable = False
seen = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and token in cmdline(p.name)]
found = {"host": socket.gethostname(), "signalable": signalable, "same": token in cmdline(pid), "seen": seen}
out = here / f"probe-{os.environ['SLURMD_NODENAME']}.json"
out.with_suffix(".tmp").write_text(json.dumps(found))
out.with_suffix(".tmp").rename(out)
"""


def test_the_nodes_are_separate_hosts_with_their_own_processes(tmp_path):
    """What the liveness code relies on: a worker can check pids of its own node only, so
    trials on the other node are judged by the queue."""
    token = f"only-on-node2-{os.getpid()}-{time.time_ns()}"
    (tmp_path / "token").write_text(token)
    (tmp_path / "probe.py").write_text(PROBE)
    python, probe = shlex.quote(sys.executable), shlex.quote(str(tmp_path / "probe.py"))
    sleeper = f"{python} -c 'import time; time.sleep(600)' {token}"
    # node2: a process with the token on its command line, its pid, a probe, then wait for release.
    on_node2 = (
        f"{sleeper} & echo $! > pid.tmp && mv pid.tmp pid; {python} {probe} .; "
        "while [ ! -e release ]; do sleep 0.1; done; kill $!"
    )
    jobs = [sbatch("node2", on_node2, tmp_path)]
    try:
        node2 = read_json_when_there(tmp_path / "probe-node2.json")
        jobs.append(sbatch("node1", f"{python} {probe} .", tmp_path))
        node1 = read_json_when_there(tmp_path / "probe-node1.json")
        pid = int((tmp_path / "pid").read_text())
        here = node_pid("node2", pid)
        print(f"node1 sees {node1}, node2 sees {node2}; node2's process {pid} is process {here} here")
        assert node1["host"] == "node1" and node2["host"] == "node2" != socket.gethostname()
        # node2 sees its own process; so does this machine, which holds both namespaces ...
        assert node2["seen"] == [pid] and node2["same"] and node2["signalable"]
        assert token in Path(f"/proc/{here}/cmdline").read_bytes().decode()
        # ... node1 does not: no process of node1 has the token, and pid is not that process
        # (kill -0 may reach a process of node1 that happens to have the same number).
        assert node1["seen"] == [] and not node1["same"]
    finally:
        (tmp_path / "release").touch()
        subprocess.run(["scancel", *jobs], capture_output=True, check=False)
    wait_for(lambda: not set(queued(jobs)), 60, "the probe jobs to end")


def sbatch(node: str, script: str, folder: Path) -> str:
    where = ["-w", node, "-t", "5", "-D", str(folder), "-o", f"{node}-%j.out"]
    out = subprocess.run(
        ["sbatch", "--parsable", *where, "--wrap", script],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().split(";")[0]


def read_json_when_there(path: Path, timeout: float = 60) -> dict[str, Any]:
    wait_for(path.exists, timeout, str(path))
    return json.loads(path.read_text())


@pytest.mark.parametrize(("storage", "jobs"), [("journal", 2), ("postgresql", 2), ("journal", 1)])
def test_a_node_lost_mid_trial_loses_no_trial(study_files, held, storage, jobs):
    """Power loss of a node with four trials running there. With two jobs, the other node's
    workers, which cannot see the lost node's processes, fail those trials from the queue state
    (the lost job waits there to run again). With one job, Slurm requeues it and its second run
    fails them. Either way their parameters run again."""
    extra = {"storage": service_url("postgresql")} if storage == "postgresql" else {}
    # One job of 4 GPUs per node; the first trials wait inside the objective, one in each worker.
    test = {"sleep": 0.5, "steps": 2, **held.knobs(4 * jobs)}
    hyper, model = study_files(test=test, n_trials=16, gpu=True, sections=slurm(jobs, 4), **extra)
    assert run(hyper, model).returncode == 0
    cfg = config(hyper, model)
    inside = held.wait(4 * jobs)
    victim = "node2" if jobs == 2 else inside[0]["node"]
    lost = sorted(n for n, o in inside.items() if o["node"] == victim)
    assert len(lost) == 4, inside
    try:
        cluster("kill-node", victim)
        killed = time.monotonic()
        held.release()
        wait_for(lambda: node_state(victim).startswith("down"), 120, f"{victim} to be DOWN")
        down = time.monotonic() - killed
        wait_for(
            lambda: all(study_of(cfg).trials[n].state == TrialState.FAIL for n in lost),
            240,
            "the lost trials to be failed",
        )
        failed = time.monotonic() - killed
        wait_for(lambda: done(study_of(cfg)) == 16, 120, "the study to end")
        print(
            f"{victim} killed with trials {lost} running: DOWN after {down:.0f} s, its trials failed "
            f"after {failed:.0f} s, the study done after {time.monotonic() - killed:.0f} s"
        )
        study = finish(cfg, 180)
    finally:
        cluster("revive-node", victim)
    c = counts(study)
    assert c.get("COMPLETE", 0) + c.get("PRUNED", 0) == 16 and "RUNNING" not in c, c
    assert sorted(t.number for t in study.trials if t.state == TrialState.FAIL) == lost
    for number in lost:
        reason = study.trials[number].user_attrs["record"]["fail_reason"]
        assert f"host {victim}) ended during the trial" in reason, reason
    assert_interrupted_trials_were_rerun(study)
    assert csv_count(cfg) == len(finished(study))
    # Failed by the surviving job's workers, or by the second run of the lost one (job i runs
    # workers 4i to 4i + 3).
    if jobs == 1:
        failers = list(range(4))
    else:
        lost_index = int(inside[lost[0]]["job_id"].rpartition("_")[2])  # array task "123_1"
        failers = [i for i in range(8) if i // 4 != lost_index]
    log = cfg.log_file.read_text() if cfg.log_file else ""
    for number in lost:
        line = next(x for x in log.splitlines() if f"trial {number} failed: worker process" in x)
        assert any(f" worker {i}: " in line for i in failers), (line, failers)


def node_state(node: str) -> str:
    return subprocess.run(
        ["sinfo", "-h", "-n", node, "-o", "%T"], capture_output=True, text=True, check=False
    ).stdout.strip()

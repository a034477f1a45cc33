"""Telling dead workers from live ones, gently on the scheduler."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from aimlutils.hyper_opt.coordination import Liveness, alive, process_is_gone
from aimlutils.hyper_opt.schedulers import SubmitError


def test_alive_matches_jobs_and_array_tasks():
    queue = {"12_0": "RUNNING", "12_3": "PENDING", "40": "RUNNING"}
    assert alive("12", queue) and alive("12_3", queue) and alive("40", queue)
    assert not alive("12_1", queue) and not alive("13", queue) and not alive(None, queue)


def test_a_process_of_this_host_is_checked_by_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert process_is_gone(proc.pid)
    assert not process_is_gone(os.getpid())
    live = Liveness()
    assert live.is_gone({"host": socket.gethostname(), "pid": proc.pid})
    assert not live.is_gone({"host": socket.gethostname(), "pid": os.getpid()})


def test_an_unreaped_child_counts_as_gone():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # ended, not reaped: a zombie
    assert process_is_gone(proc.pid)
    proc.wait()


def test_other_hosts_are_judged_by_the_queue():
    live = Liveness(lambda: {"7_1": "RUNNING"}, min_interval_s=0)
    assert not live.is_gone({"host": "node9", "pid": 1, "job_id": "7_1"})
    assert live.is_gone({"host": "node9", "pid": 1, "job_id": "7_2"})
    # Without a job id or a queue nothing can be said: never fail a trial on a guess.
    assert not live.is_gone({"host": "node9", "pid": 1})
    assert not Liveness().is_gone({"host": "node9", "pid": 1, "job_id": "7_2"})


def test_a_queue_that_does_not_answer_proves_nothing(tmp_path):
    """A busy controller times out: no owner is gone for it, and the next interval asks again."""
    answers: list[object] = [SubmitError(["squeue"], 1, "", "Socket timed out"), {"7_1": "RUNNING"}]

    def flaky() -> dict[str, str]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    for cache in (None, tmp_path / ".queue.json"):  # asked alone, or once for all the workers
        answers[:] = [SubmitError(["squeue"], 1, "", "Socket timed out"), {"7_1": "RUNNING"}]
        live = Liveness(flaky, min_interval_s=0, cache=cache)
        assert not live.is_gone({"host": "node9", "pid": 1, "job_id": "7_1"})  # no answer: alive
        assert not live.is_gone({"host": "node9", "pid": 1, "job_id": "7_1"})  # asked again: running
        assert not answers


def test_only_the_study_jobs_the_asker_submitted_are_judged_by_their_absence():
    """A job of a collaborator (hidden from this user by PrivateData) or not recorded yet."""
    live = Liveness(lambda: {}, min_interval_s=0, study_jobs=lambda: ["7"])
    assert live.is_gone({"host": "node9", "pid": 1, "job_id": "7_1"})  # ours, and not queued
    assert not live.is_gone({"host": "node9", "pid": 1, "job_id": "8_1"})  # not ours: unknown


def test_a_job_waiting_to_run_again_no_longer_runs_its_trial():
    """A node failure or a preemption requeues the job: same id, PENDING until it restarts."""
    live = Liveness(lambda: {"7_1": "PENDING", "7_2": "RUNNING"}, min_interval_s=0)
    started = time.time() - 10
    assert live.is_gone({"host": "node9", "pid": 1, "job_id": "7_1"}, since=started)
    assert not live.is_gone({"host": "node9", "pid": 1, "job_id": "7_2"}, since=started)
    # A queue answer from before the trial began may show the job before its first start.
    stale = Liveness(lambda: {"7_1": "PENDING"}, min_interval_s=3600)
    assert stale.is_gone({"host": "node9", "pid": 1, "job_id": "7_1"}, since=started)
    assert not stale.is_gone({"host": "node9", "pid": 1, "job_id": "7_1"}, since=time.time() + 1)
    assert not stale.is_gone({"host": "node9", "pid": 1, "job_id": "7_1"})  # when unknown


def test_a_trial_of_an_earlier_run_of_my_own_job_is_gone_even_if_its_pid_lives():
    """After a requeue the job runs again under its id; on a rebooted node old pids come back."""
    me = {"job_id": "7_1", "restarts": 1}
    live = Liveness(lambda: {"7_1": "RUNNING"}, min_interval_s=0, me=me)
    here, pid = socket.gethostname(), os.getpid()
    assert live.is_gone({"host": here, "pid": pid, "job_id": "7_1"})  # recorded before restarts existed
    assert live.is_gone({"host": "node9", "pid": 1, "job_id": "7_1", "restarts": 0})
    assert not live.is_gone({"host": here, "pid": pid, "job_id": "7_1", "restarts": 1})
    assert not live.is_gone({"host": here, "pid": pid, "job_id": "7_2", "restarts": 0})


def test_workers_of_a_study_share_one_queue_query_per_interval(tmp_path):
    asked = []

    def queue() -> dict[str, str]:
        asked.append(1)
        return {"7_1": "RUNNING"}

    workers = [Liveness(queue, min_interval_s=60, cache=tmp_path / ".queue.json") for _ in range(8)]
    for live in workers:
        for job in ("7_1", "7_2", "8_0"):
            live.is_gone({"host": "elsewhere", "pid": 1, "job_id": job})
    assert len(asked) == 1
    assert workers[-1].is_gone({"host": "elsewhere", "pid": 1, "job_id": "7_2"})


def _life(study, folder):
    """The lifecycle of ``study``'s trials, for recovery, with ``folder`` as save_path."""
    from aimlutils.hyper_opt.coordination import ResultsCsv, TrialLife
    from aimlutils.hyper_opt.paths import StudyPaths

    paths = StudyPaths(folder)
    return TrialLife(study, study._storage, paths, ResultsCsv(paths.results_csv))


def test_a_trial_no_worker_took_up_is_failed_after_a_while(tmp_path, monkeypatch):
    import optuna

    from aimlutils.hyper_opt.coordination import recovery

    study = optuna.create_study()
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    running = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    assert recovery.fail_dead_trials(_life(study, tmp_path), running, Liveness()) == []
    monkeypatch.setattr(recovery, "ORPHAN_AFTER_S", 0.0)
    assert recovery.fail_dead_trials(_life(study, tmp_path), running, Liveness()) == [0]
    failed = study.trials[0]
    assert failed.state == optuna.trial.TrialState.FAIL
    assert "no worker took the trial up" in failed.user_attrs["record"]["fail_reason"]
    assert study.trials[1].state == optuna.trial.TrialState.WAITING  # its parameters run again
    assert study.trials[1].user_attrs["retry_of"] == 0
    assert study.trials[1].system_attrs["fixed_params"] == failed.params


def test_a_trial_that_ends_while_it_is_judged_is_left_as_it_ended(tmp_path):
    """Its worker finishes it between the listing of RUNNING trials and the verdict."""
    import optuna

    from aimlutils.hyper_opt.coordination import RunningTrials, recovery

    study = optuna.create_study()
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    running = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    owners = RunningTrials(tmp_path / "running")
    owners.mark(0, {"host": "node9", "pid": 1, "job_id": "7_1"})
    study.tell(trial, 0.5)
    gone = Liveness(lambda: {}, min_interval_s=0)  # the queue has forgotten job 7_1
    assert recovery.fail_dead_trials(_life(study, tmp_path), running, gone) == []
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE and not study.trials[0].user_attrs
    assert len(study.trials) == 1  # nothing queued again


def test_cancel_waits_for_the_trials_of_a_cancelled_arrays_tasks():
    from aimlutils.hyper_opt.commands.status import _owned_by
    from aimlutils.hyper_opt.schedulers import Slurm

    slurm = Slurm()
    assert _owned_by({"job_id": "12_3"}, ["12"], slurm) and _owned_by({"job_id": "40"}, ["12", "40"], slurm)
    assert not _owned_by({"job_id": "13_0"}, ["12"], slurm) and not _owned_by(None, ["12"], slurm)


def test_no_clock_of_another_host_stops_turns_or_queue_questions(tmp_path):
    """A host whose clock is an hour ahead wrote the sweep turn and the shared queue answer."""
    from aimlutils.hyper_opt.coordination import StudyTurn

    ahead = time.time() + 3600
    (tmp_path / ".sweep.turn").write_text(repr(ahead))
    turn = StudyTurn(tmp_path / ".sweep.turn")
    assert not turn.take(0.2)  # a turn someone took: wait an interval by this host's clock
    deadline = time.monotonic() + 30
    while not turn.take(0.2):  # then it is ours, an hour before that host's clock says so
        assert time.monotonic() < deadline, "the turn never came"
        time.sleep(0.05)

    asked: list[int] = []

    def queue() -> dict[str, str]:
        asked.append(1)
        return {"7_1": "RUNNING"}

    cache = tmp_path / ".queue.json"
    cache.write_text(json.dumps({"at": ahead, "states": {}}))  # "fresh" for an hour by its clock
    live = Liveness(queue, min_interval_s=0.2, cache=cache)
    deadline = time.monotonic() + 30
    while not asked:
        live.is_gone({"host": "node9", "pid": 1, "job_id": "7_1"})
        assert time.monotonic() < deadline, "the queue was never asked again"
        time.sleep(0.05)

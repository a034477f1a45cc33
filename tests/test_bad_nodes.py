"""A node whose trials all fail while others succeed is left out of the study; one whose errors
every node has, or that fails now and then, is not."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import FrozenTrial, TrialState, create_trial

from aimlutils.hyper_opt.api import open_study, read_config
from aimlutils.hyper_opt.cli import main
from aimlutils.hyper_opt.config import ConfigError
from aimlutils.hyper_opt.coordination import BadNodes, NodeEvidence, NodeState, StudyStop, judge
from aimlutils.hyper_opt.coordination.failures import verdict
from aimlutils.hyper_opt.coordination.nodes import error_kind
from aimlutils.hyper_opt.objective.base import BaseObjective
from aimlutils.hyper_opt.schedulers import SchedulerSection, Slurm
from aimlutils.hyper_opt.worker import loop
from tests.conftest import MODEL, OBJECTIVE, hyper_config

CUDA = "RuntimeError: CUDA error: an illegal memory access was encountered"


def _trials(*ended: tuple[str, str | None]) -> list[FrozenTrial]:
    """Trials numbered in order, each ``(node, error)`` (``None``: COMPLETE), ended in order."""
    out = []
    for number, (node, error) in enumerate(ended):
        record: dict[str, Any] = {"worker": {"node": node}}
        if error:
            record.update(fail_reason=error, failed_by="objective")
        state = TrialState.FAIL if error else TrialState.COMPLETE
        trial = create_trial(state=state, value=None if error else 1.0, user_attrs={"record": record})
        trial.number = number
        out.append(trial)
    return out


def test_a_node_failing_three_in_a_row_with_its_own_error_while_another_succeeds_is_bad():
    trials = _trials(("node1", None), ("node2", CUDA), ("node2", CUDA), ("node2", CUDA), ("node1", None))
    state, evidence = judge(trials, "node2", 3)
    assert state is NodeState.BAD and evidence is not None
    assert evidence.trials == (1, 2, 3) and evidence.successes_elsewhere == 1 and evidence.last_error == CUDA
    assert judge(trials, "node1", 3)[0] is NodeState.FINE
    assert judge(trials, "node2", 4)[0] is NodeState.FINE  # below its threshold


def test_a_success_claimed_before_the_streak_began_proves_nothing_and_the_node_waits_for_one():
    # Trial 0 succeeded on node1, but it was claimed before node2's streak: the objective may have
    # broken since (a file deleted mid-study) on every node.
    trials = _trials(("node1", None), ("node2", CUDA), ("node2", CUDA), ("node2", CUDA))
    assert judge(trials, "node2", 3)[0] is NodeState.FINE  # nothing runs elsewhere: the budget decides
    state, evidence = judge(trials, "node2", 3, running_on={"node1", "node2"})
    assert state is NodeState.DOUBT and evidence is not None and evidence.successes_elsewhere == 0


def test_an_error_other_nodes_have_is_the_objectives_not_the_nodes():
    oom = "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    elsewhere = oom.replace("2.00", "7.50")  # the same kind, another size
    trials = _trials(("node1", elsewhere), ("node2", oom), ("node2", oom), ("node2", oom), ("node1", None))
    assert error_kind(oom) == error_kind(elsewhere)
    assert judge(trials, "node2", 3)[0] is NodeState.FINE


def test_two_nodes_broken_alike_are_both_bad():
    # Their errors match each other's, but both are streaks of their own: a broken driver on two nodes.
    ended = [("node2", CUDA), ("node3", CUDA)] * 3 + [("node1", None)]
    trials = _trials(*ended)
    assert judge(trials, "node2", 3)[0] is NodeState.BAD
    assert judge(trials, "node3", 3)[0] is NodeState.BAD


def test_a_success_on_the_node_ends_its_streak_and_infrastructure_failures_do_not_count():
    trials = _trials(("node2", CUDA), ("node2", CUDA), ("node2", None), ("node2", CUDA), ("node1", None))
    assert judge(trials, "node2", 2)[0] is NodeState.FINE
    lost = create_trial(state=TrialState.FAIL, user_attrs={"record": {"worker": {"node": "node2"}}})
    lost.number = 5
    again = _trials(("node2", CUDA), ("node2", CUDA))
    for number, trial in enumerate(again, start=6):
        trial.number = number
    success = _trials(("node1", None))[0]
    success.number = 9
    assert judge([*trials, lost, *again, success], "node2", 3)[0] is NodeState.BAD  # 3, 6, 7


def _ended(study: optuna.Study, node: str, error: str | None) -> None:
    trial = study.ask()
    record: dict[str, Any] = {"worker": {"node": node}}
    if error:
        record.update(fail_reason=error, failed_by="objective")
    trial.set_user_attr("record", record)
    study.tell(trial, None if error else 1.0, state=TrialState.FAIL if error else TrialState.COMPLETE)


def test_failures_on_a_bad_node_do_not_spend_the_failure_budget():
    study = optuna.create_study(study_name=f"nodes-{uuid.uuid4().hex[:6]}")
    _ended(study, "node1", None)
    for _ in range(4):
        _ended(study, "node2", CUDA)
    assert verdict(study, 4, None) is not None
    assert verdict(study, 4, None, bad_nodes=["node2"]) is None


def test_the_marks_file_keeps_one_line_a_node_and_survives_a_cut_line(tmp_path):
    nodes = BadNodes(tmp_path / "bad_nodes.tsv")
    assert nodes.names() == []
    assert nodes.mark(NodeEvidence("node2", (1, 2, 3), 1, CUDA))
    assert not BadNodes(nodes.path).mark(NodeEvidence("node2", (1, 2, 3, 4), 2, CUDA))
    with open(nodes.path, "a") as fh:
        fh.write('node7\t{"trials": [1,')  # a writer stopped mid-line
    assert nodes.names() == ["node2", "node7"]
    assert nodes.marks()["node2"].trials == (1, 2, 3) and nodes.marks()["node2"].marked_at


# Workers in threads, each told it runs on a node of its own.


class _BrokenOnNode2(BaseObjective):
    def train(self, trial: optuna.trial.BaseTrial, conf: dict[str, Any]) -> dict[str, Any]:
        if (self.worker_identity or {}).get("node") == "node2":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        time.sleep(0.2)
        return {"val_loss": (conf["optimizer"]["learning_rate"] - 0.3) ** 2}


def _on_nodes(monkeypatch: pytest.MonkeyPatch, nodes: dict[int, str]) -> None:
    real = loop.worker_identity

    def identity(index: int) -> dict[str, Any]:
        return {**real(index), "node": nodes[index]}

    monkeypatch.setattr(loop, "worker_identity", identity)


def test_workers_on_a_broken_node_leave_it_and_the_study_ends_at_n_trials_elsewhere(
    tmp_path, monkeypatch, capsys
):
    _on_nodes(monkeypatch, {0: "node1", 1: "node2", 2: "node2"})
    (tmp_path / "objective.py").write_text(OBJECTIVE)  # for status, which reads hyper.yml
    hyper = hyper_config(tmp_path / "results", tmp_path / "objective.py", n_trials=8, max_failures=5)
    (tmp_path / "hyper.yml").write_text(yaml.safe_dump(hyper))
    cfg = read_config(hyper, dict(MODEL), objective=_BrokenOnNode2)
    study = open_study(cfg, 3)
    workers: dict[int, loop.Worker] = {}
    ran: dict[int, int] = {}

    def work(index: int) -> None:
        workers[index] = loop.Worker(cfg, index, 3, objective_class=_BrokenOnNode2)
        ran[index] = workers[index].run()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert len(ran) == 3, ran  # every worker returned
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 8 and {t.user_attrs["record"]["worker"]["node"] for t in complete} == {"node1"}
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed and {t.user_attrs["record"]["worker"]["node"] for t in failed} == {"node2"}
    assert StudyStop.read(cfg.paths.stopped) is None  # 5 failures in a row would have stopped it
    marks = BadNodes(cfg.paths.bad_nodes).marks()
    assert list(marks) == ["node2"] and "CUDA error" in marks["node2"].last_error
    assert workers[1].node.left is not None and workers[2].node.left is not None
    assert workers[0].node.left is None
    # The parameters of the node's streak were queued again, and run on node1.
    for number in marks["node2"].trials:
        retries = [t for t in trials if t.user_attrs.get("retry_of") == number]
        assert retries and retries[0].params == trials[number].params, number

    assert main(["status", str(tmp_path / "hyper.yml")]) == 0
    out = capsys.readouterr().out
    assert "marked bad" in out and "node2" in out, out


def test_with_bad_node_failures_null_a_broken_node_is_never_left(tmp_path, monkeypatch):
    _on_nodes(monkeypatch, {0: "node1", 1: "node2"})
    hyper = hyper_config(tmp_path / "results", tmp_path / "unused.py", n_trials=4, bad_node_failures=None)
    del hyper["optuna"]["objective"]
    cfg = read_config(hyper, dict(MODEL), objective=_BrokenOnNode2)
    study = open_study(cfg, 2)
    node2 = loop.Worker(cfg, 1, 2, objective_class=_BrokenOnNode2, max_trials=4)
    node1 = loop.Worker(cfg, 0, 2, objective_class=_BrokenOnNode2)
    assert node2.run() == 4 and node1.run() == 4
    assert node2.node.left is None and not cfg.paths.bad_nodes.exists()
    assert sum(t.state == TrialState.FAIL for t in study.get_trials()) == 4


# Configuration and submission.


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "greater than or equal to 1"),
        ("few", "valid integer"),
        (20, "must be below optuna.max_failures (20)"),
    ],
)
def test_bad_node_failures_is_checked(tmp_path, value, message):
    hyper = hyper_config(tmp_path / "results", tmp_path / "objective.py", bad_node_failures=value)
    (tmp_path / "objective.py").write_text(OBJECTIVE)
    with pytest.raises(ConfigError) as err:
        read_config(hyper, dict(MODEL))
    assert "optuna.bad_node_failures" in str(err.value) and message in str(err.value), str(err.value)


def test_a_small_max_failures_leaves_the_default_bad_node_failures_alone(tmp_path):
    (tmp_path / "objective.py").write_text(OBJECTIVE)
    cfg = read_config(
        hyper_config(tmp_path / "results", tmp_path / "objective.py", max_failures=2), dict(MODEL)
    )
    assert cfg.optuna.bad_node_failures == 3


def test_slurm_submissions_and_requeues_exclude_the_marked_nodes_with_the_users_own():
    section = SchedulerSection(batch={"exclude": "node[5-6]", "t": "10"})
    slurm = Slurm(section)
    submit = slurm.excluding(["sbatch", "--parsable", "job.sh"], ["node2"])
    assert submit == ["sbatch", "--exclude=node[5-6],node2", "--parsable", "job.sh"]
    assert slurm.excluding(["sbatch", "job.sh"], []) == ["sbatch", "job.sh"]
    epilogue = "\n".join(slurm.epilogue())
    assert "ExcNodeList='node[5-6],'\"$excluded\"" in epilogue and 'scancel "$job_id"' in epilogue

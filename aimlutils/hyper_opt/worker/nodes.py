"""A worker's watch on its own node: claim on, wait for evidence, or leave a node marked bad
(:mod:`aimlutils.hyper_opt.coordination.nodes` says how the trials judge a node)."""

from __future__ import annotations

import logging

from optuna.trial import TrialState

from aimlutils.hyper_opt.coordination import BadNodes, NodeEvidence, NodeState, TrialLife, judge

logger = logging.getLogger("aimlutils.hyper_opt.worker")


class NodeWatch:
    """Asked before each claim. The trials are read (one pass over the study) only while the node
    is in question: at the worker's start, after a trial failed by the objective's error, and
    while the node is in doubt; otherwise it costs one ``stat`` of ``bad_nodes.tsv``.

    ``threshold``: ``optuna.bad_node_failures`` (``None``: never judge, never leave).
    """

    def __init__(self, life: TrialLife, node: str | None, threshold: int | None) -> None:
        self.life, self.node, self.threshold = life, node, threshold
        self.bad_nodes: BadNodes | None = life.bad_nodes if threshold is not None else None
        self.in_question = True
        #: The node's evidence once it is marked (by this worker or another).
        self.left: NodeEvidence | None = None
        self._doubt_logged = False

    def check(self) -> NodeState:
        """FINE: claim; DOUBT: wait and ask again; BAD: leave (:attr:`left` says why)."""
        if self.bad_nodes is None or self.node is None or self.threshold is None:
            return NodeState.FINE
        marked = self.bad_nodes.marks().get(self.node)
        if marked is not None:
            self.left = marked
            return NodeState.BAD
        if not self.in_question:
            return NodeState.FINE
        trials = self.life.study.get_trials(deepcopy=False)
        state, evidence = judge(trials, self.node, self.threshold, self._running_on())
        if state is NodeState.BAD and evidence is not None:
            self._mark(evidence)
        elif state is NodeState.DOUBT and evidence is not None and not self._doubt_logged:
            self._doubt_logged = True
            logger.warning(
                "node %s: %s; no trial has succeeded elsewhere yet: waiting for one on another node to end",
                self.node,
                evidence.describe(),
            )
        self.in_question = state is not NodeState.FINE
        return state

    def trial_failed(self) -> None:
        """This worker's trial failed by the objective's error: the node is in question again."""
        self.in_question = True

    def _running_on(self) -> set[str]:
        running = self.life.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        owners = (self.life.owners.owner(t.number) or {} for t in running)
        return {str(owner["node"]) for owner in owners if owner.get("node")}

    def _mark(self, evidence: NodeEvidence) -> None:
        """Mark the node, and queue the parameters of its streak again, for the other nodes."""
        if self.bad_nodes is None:  # optuna.bad_node_failures is null: nothing is ever marked
            raise RuntimeError(f"node {self.node} cannot be marked: optuna.bad_node_failures is off")
        self.left = evidence
        if not self.bad_nodes.mark(evidence):
            return  # another worker of this node marked it first, and queued them
        trials = {t.number: t for t in self.life.study.get_trials(deepcopy=False)}
        requeued = [n for n in evidence.trials if n in trials and self.life.requeue(trials[n])]
        logger.error(
            "node %s is marked bad and left out of the study: %s. Its failed trials %s are queued again.",
            self.node,
            evidence.describe(),
            requeued or "(none: retried already)",
        )

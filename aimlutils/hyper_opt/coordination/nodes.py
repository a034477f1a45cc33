"""Bad nodes: a node that fails every trial it gets is left out of the study
(``optuna.bad_node_failures``).

A node with a broken GPU or driver fails each trial it gets within seconds, and a requeued job may
land on it again. The trials say so, by the node each ran on (``worker.node`` in its record):

- the node's last ``bad_node_failures`` trials to end there (or more) failed by the objective's own
  error, none COMPLETE or PRUNED there in between: its *streak*;
- none of their errors was seen on another node outside a streak of that node's own: an error that
  healthy nodes have too is the objective's (a bug, a configuration that runs out of memory), not
  the node's. Errors are compared without their numbers (addresses, sizes, trial numbers);
- a trial claimed after the streak's first one succeeded (COMPLETE or PRUNED) on another node: the
  objective works now, elsewhere. Trial numbers say "after", not clocks, which differ by host.

Then the node is *marked*: a line in ``save_path/bad_nodes.tsv`` (:class:`BadNodes`), which the
workers, the job scripts, the submissions and ``status`` read. A node whose streak meets the first
two conditions while trials run on other nodes and none has succeeded yet is *in doubt*
(:attr:`NodeState.DOUBT`): its workers wait for the evidence rather than fail more trials.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import os
import re
from collections.abc import Collection, Sequence
from pathlib import Path

from optuna.trial import FrozenTrial, TrialState

from aimlutils.hyper_opt.coordination.failures import failed_by_objective
from aimlutils.hyper_opt.coordination.records import node_of, read_record
from aimlutils.hyper_opt.storage.locks import FileLock

#: ``optuna.bad_node_failures`` when hyper.yml does not say.
DEFAULT_BAD_NODE_FAILURES = 3

_NUMBERS = re.compile(r"0x[0-9a-fA-F]+|\d+(?:\.\d+)?")


class NodeState(enum.Enum):
    """What the study's trials say of one node."""

    FINE = "fine"
    """Nothing against it, or nothing that tells the node from the objective."""
    DOUBT = "doubt"
    """A streak of errors no other node has, while trials run elsewhere and none has succeeded
    since the streak began: wait for one of them to end."""
    BAD = "bad"
    """Marked: its workers leave, and no job of the study runs there again."""


def error_kind(reason: str) -> str:
    """A failure's reason without its numbers, so that two of one kind compare equal.

    Example:
        >>> error_kind("RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0)")
        'RuntimeError: CUDA out of memory. Tried to allocate # GiB (GPU #)'
    """
    first = reason.strip().splitlines()[0] if reason.strip() else ""
    return _NUMBERS.sub("#", first)[:200]


def _reason(trial: FrozenTrial) -> str:
    return str(read_record(trial).get("fail_reason") or "")


@dataclasses.dataclass(frozen=True)
class NodeEvidence:
    """Why a node is marked, or in doubt: what ``status`` shows.

    Example:
        >>> evidence = NodeEvidence("node2", (4, 5, 7), 2, "RuntimeError: CUDA error")
        >>> evidence.describe()[:64]
        '3 trials in a row failed there (4, 5, 7), 2 succeeded on other n'
        >>> NodeEvidence.parse(evidence.line()) == evidence
        True
    """

    node: str
    trials: tuple[int, ...]
    """The trials of the node's streak, the first first."""
    successes_elsewhere: int
    """Trials claimed after the streak's first that succeeded on other nodes."""
    last_error: str
    marked_at: str = ""

    def describe(self) -> str:
        shown = ", ".join(map(str, self.trials[-8:]))
        shown = f"..., {shown}" if len(self.trials) > 8 else shown
        return (
            f"{len(self.trials)} trials in a row failed there ({shown}), {self.successes_elsewhere} "
            f"succeeded on other nodes since; last error: {self.last_error}"
        )

    def line(self) -> str:
        """Its line in ``bad_nodes.tsv``: the node, a tab, the rest as JSON (one line)."""
        fields = dataclasses.asdict(self)
        del fields["node"]
        return f"{self.node}\t{json.dumps(fields)}"

    @classmethod
    def parse(cls, line: str) -> NodeEvidence | None:
        node, _, rest = line.rstrip("\n").partition("\t")
        try:
            fields = json.loads(rest) if rest else {}
            fields["trials"] = tuple(fields.get("trials", ()))
            return cls(node=node, **fields) if node else None
        except (ValueError, TypeError):  # a line cut short: the name still counts
            return cls(node, (), 0, "") if node else None


def _streak(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The failures by the objective's error after the last success, of one node's ended trials
    (by end time: one host's clock); infrastructure failures are skipped."""
    streak: list[FrozenTrial] = []
    for trial in reversed(trials):
        if trial.state != TrialState.FAIL:
            break
        if failed_by_objective(trial):
            streak.append(trial)
    return streak[::-1]


def judge(
    trials: Sequence[FrozenTrial], node: str, threshold: int, running_on: Collection[str] = ()
) -> tuple[NodeState, NodeEvidence | None]:
    """What ``trials`` (the study's) say of ``node``; ``running_on``: the nodes of the trials
    running now. The evidence comes with DOUBT and BAD.

    Example:
        >>> from optuna.trial import create_trial
        >>> def ended(node, error=None):
        ...     record = {"worker": {"node": node}}
        ...     if error:
        ...         record.update(fail_reason=error, failed_by="objective")
        ...     state = TrialState.FAIL if error else TrialState.COMPLETE
        ...     return create_trial(state=state, value=None if error else 1.0, user_attrs={"record": record})
        >>> trials = [ended("node2", "RuntimeError: CUDA error") for _ in range(3)] + [ended("node1")]
        >>> for number, trial in enumerate(trials):
        ...     trial.number = number
        >>> judge(trials, "node2", 3)[0], judge(trials[:3], "node2", 3, running_on=["node1"])[0]
        (<NodeState.BAD: 'bad'>, <NodeState.DOUBT: 'doubt'>)
        >>> judge(trials, "node1", 3)[0], judge(trials[:3], "node2", 3)[0]
        (<NodeState.FINE: 'fine'>, <NodeState.FINE: 'fine'>)
    """
    by_node: dict[str, list[FrozenTrial]] = {}
    for trial in trials:
        where = node_of(trial)
        counted = trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or failed_by_objective(trial)
        if where is not None and counted:
            by_node.setdefault(where, []).append(trial)
    for ended in by_node.values():
        ended.sort(key=lambda t: (t.datetime_complete or datetime.datetime.min, t.number))
    streaks = {where: _streak(ended) for where, ended in by_node.items()}
    mine = streaks.get(node, [])
    if len(mine) < threshold:
        return NodeState.FINE, None
    others = {where: ended for where, ended in by_node.items() if where != node}
    ordinary = set()  # errors of other nodes, outside a streak long enough to be a node's own
    for where, ended in others.items():
        own = {t.number for t in streaks[where]} if len(streaks[where]) >= threshold else set()
        ordinary |= {error_kind(_reason(t)) for t in ended if failed_by_objective(t) and t.number not in own}
    if any(error_kind(_reason(t)) in ordinary for t in mine):
        return NodeState.FINE, None
    first = mine[0].number
    wins = sum(t.state != TrialState.FAIL and t.number > first for ended in others.values() for t in ended)
    evidence = NodeEvidence(node, tuple(t.number for t in mine), wins, _reason(mine[-1]))
    if wins:
        return NodeState.BAD, evidence
    if any(where != node for where in running_on):
        return NodeState.DOUBT, evidence
    return NodeState.FINE, None


class BadNodes:
    """``save_path/bad_nodes.tsv``: the study's marked nodes, a line each (:meth:`NodeEvidence.line`).

    Plain lines so that a job script reads the names with ``cut -f1``. Appended under a lock, read
    again when the file changed. Delete a node's line once it is repaired.

    Example:
        >>> import tempfile
        >>> nodes = BadNodes(Path(tempfile.mkdtemp()) / "bad_nodes.tsv")
        >>> nodes.mark(NodeEvidence("node2", (1, 2, 3), 1, "RuntimeError: CUDA error"))
        True
        >>> nodes.mark(NodeEvidence("node2", (1, 2, 3, 4), 1, "RuntimeError: CUDA error"))
        False
        >>> nodes.names()
        ['node2']
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._marks: dict[str, NodeEvidence] = {}

    def marks(self) -> dict[str, NodeEvidence]:
        """``{node: evidence}`` as the file says now (one ``stat`` when it did not change)."""
        try:
            info = os.stat(self.path)
        except OSError:
            self._stamp, self._marks = None, {}
            return {}
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp != self._stamp:
            self._stamp, self._marks = stamp, self._read()
        return self._marks

    def names(self) -> list[str]:
        return sorted(self.marks())

    def _read(self) -> dict[str, NodeEvidence]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return {}
        found = (NodeEvidence.parse(line) for line in lines if line.strip())
        return {e.node: e for e in found if e is not None}

    def mark(self, evidence: NodeEvidence) -> bool:
        """Add ``evidence``'s node; ``False`` when it was marked already (by another worker)."""
        with FileLock(self.path.with_suffix(".lock")):
            if evidence.node in self._read():
                return False
            now = datetime.datetime.now().isoformat(timespec="seconds")
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(dataclasses.replace(evidence, marked_at=now).line() + "\n")
        return True

"""A study that cannot succeed stops: the failure budget (``optuna.max_failures``).

A bug in the objective (a typo, a wrong path) fails every trial in milliseconds, and failed trials
do not count toward ``n_trials``: without a limit the workers would claim trial after trial for
the whole allocation. The study stops once its last ``max_failures`` trials to end all failed by
the objective's own error (an exception in ``train``, a command that exited non-zero, a metric that
is not a number). Trials lost to the infrastructure (a node lost, a time limit, a preemption, an
outage, ``scancel``) count neither way: they say nothing about the objective; nor do the failures
on a node marked bad (:mod:`~.nodes`), which say something about that node.

In a row, not in all: an objective that fails now and then (a configuration that runs out of GPU
memory) must still reach ``n_trials``. With the default of 20, one that fails a quarter of its
trials at random stops by chance with odds of 0.25**20 (about 1e-12) per trial, one that fails
half of them 1e-6; one that always fails stops after 20 trials.

The verdict is written to ``save_path/stopped.json`` (:class:`StudyStop`), where every worker
looks before it claims a trial, and where ``optimize.py``, ``status`` and ``report`` read why.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from aimlutils.hyper_opt.coordination.records import node_of, read_record

#: ``failed_by`` in a trial's record when the objective's own error failed it.
BY_OBJECTIVE = "objective"
#: ``optuna.max_failures`` when hyper.yml does not say.
DEFAULT_MAX_FAILURES = 20


def failed_by_objective(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.FAIL and read_record(trial).get("failed_by") == BY_OBJECTIVE


def failure_streak(study: optuna.Study, bad_nodes: Collection[str] = ()) -> list[FrozenTrial]:
    """The trials that failed by the objective's own error since the last one that did not
    (COMPLETE or PRUNED), by end time, the latest last; infrastructure failures are skipped, and
    so are failures on ``bad_nodes``."""
    ended = [
        t
        for t in study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        )
        if t.state != TrialState.FAIL or (failed_by_objective(t) and node_of(t) not in bad_nodes)
    ]
    ended.sort(key=lambda t: (t.datetime_complete or datetime.datetime.min, t.number))
    streak: list[FrozenTrial] = []
    for trial in reversed(ended):
        if trial.state != TrialState.FAIL:
            break
        streak.append(trial)
    return streak[::-1]


@dataclasses.dataclass(frozen=True)
class StudyStop:
    """Why a study stopped before ``n_trials``: what ``save_path/stopped.json`` holds.

    Example:
        >>> stop = StudyStop(20, 41, "RuntimeError: typo in my training script", "/s/log.txt")
        >>> print(stop.message())
        The study stopped: its last 20 trials failed by the objective's own error (optuna.max_failures).
        The last, trial 41: RuntimeError: typo in my training script
        Its traceback is in /s/log.txt. Fix the objective, then run again with --reload.
    """

    failures: int
    last_trial: int
    last_error: str
    log: str | None = None

    def message(self) -> str:
        where = f"Its traceback is in {self.log}. " if self.log else ""
        return (
            f"The study stopped: its last {self.failures} trials failed by the objective's own error "
            f"(optuna.max_failures).\nThe last, trial {self.last_trial}: {self.last_error}\n"
            f"{where}Fix the objective, then run again with --reload."
        )

    def write(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(dataclasses.asdict(self)))
        tmp.replace(path)  # whole or not at all: every worker reads it

    @classmethod
    def read(cls, path: Path) -> StudyStop | None:
        try:
            data: dict[str, Any] = json.loads(path.read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None


def verdict(
    study: optuna.Study, max_failures: int | None, log: str | None, bad_nodes: Collection[str] = ()
) -> StudyStop | None:
    """The study's stop when its failure streak (``bad_nodes`` left out) reached ``max_failures``
    (``None``: never)."""
    if max_failures is None:
        return None
    streak = failure_streak(study, bad_nodes)
    if len(streak) < max_failures:
        return None
    last = streak[-1]
    return StudyStop(len(streak), last.number, str(read_record(last).get("fail_reason", "")), log)

"""The study's global trial budget: ``n_trials`` COMPLETE + PRUNED trials, however many workers.

A query only: :meth:`TrialBudget.check` answers and changes nothing; what a worker does about a
full budget (look for dead workers' trials, wait) is the worker's business.
"""

from __future__ import annotations

import datetime
import enum

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from aimlutils.hyper_opt.coordination.usage import StudyLimits, Usage


class Room(enum.Enum):
    """What the budget says to a worker about to start a trial."""

    START = "start"
    """There is room: ask for a trial."""
    WAIT = "wait"
    """Running trials fill the budget, but one may still fail and free its place."""
    DONE = "done"
    """``n_trials`` trials are finished, or a trial reached ``optuna.target``."""


def count(trials: list[FrozenTrial]) -> dict[TrialState, int]:
    out = dict.fromkeys(TrialState, 0)
    for t in trials:
        out[t.state] += 1
    return out


def target_trial(study: optuna.Study, target: float | None) -> FrozenTrial | None:
    """The first trial (by completion) whose value reaches ``target`` in the study's direction.

    Example:
        >>> study = optuna.create_study()
        >>> study.add_trial(optuna.trial.create_trial(value=0.5))
        >>> target_trial(study, 0.6).number
        0
    """
    if target is None or len(study.directions) != 1:
        return None
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    reached = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and (t.value >= target if maximize else t.value <= target)
    ]
    return min(reached, key=lambda t: (t.datetime_complete or datetime.datetime.max, t.number), default=None)


class TrialBudget:
    """Keeps the study's COMPLETE + PRUNED trials at exactly ``n_trials``.

    A worker may start a trial while finished plus running trials leave room (a running trial may
    still fail and free its place); the check and the ask happen under the claim lock
    (:mod:`aimlutils.hyper_opt.coordination.claim`), so two workers rarely ask for the last place
    together. Exactness does not rest on the lock: a trial numbered ``n_trials`` or higher runs
    only if the trials numbered before it, which every worker sees, plus those finished leave
    room (:meth:`admits`), so of two racing trials the lower number wins. Trials numbered below
    ``n_trials`` always fit, since there are only ``n_trials`` of them; checking them costs one
    lookup, which keeps the common case cheap.

    Example:
        >>> study = optuna.create_study()
        >>> budget = TrialBudget(study, study._storage, n_trials=1)
        >>> budget.check()
        <Room.START: 'start'>
        >>> study.optimize(lambda t: 0.0, n_trials=1)
        >>> budget.check()
        <Room.DONE: 'done'>
    """

    def __init__(
        self,
        study: optuna.Study,
        storage: BaseStorage,
        n_trials: int,
        target: float | None = None,
        limits: StudyLimits | None = None,
    ) -> None:
        self.study = study
        self.storage = storage
        self.n_trials = n_trials
        self.target = target
        self.limits = limits if limits is not None and limits.any else None
        #: Why the study is done before its n_trials: a budget of time or GPU-hours spent.
        self.spent: str | None = None
        self._study_id = storage.get_study_id_from_name(study.study_name)

    def _trials(self) -> list[FrozenTrial]:
        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        return self.study.get_trials(deepcopy=False, states=states)

    def _fewer_trials_than_budget(self) -> bool:
        try:
            self.storage.get_trial_id_from_study_id_trial_number(self._study_id, self.n_trials - 1)
        except KeyError:
            return True
        return False

    def check(self) -> Room:
        """Whether a trial may start now."""
        if self.target is not None and target_trial(self.study, self.target) is not None:
            return Room.DONE
        if self.limits is not None:
            trials = self.study.get_trials(deepcopy=False)
            self.spent = self.limits.spent(Usage.of(trials, self.limits.running_default))
            if self.spent is not None:
                return Room.DONE
        if self._fewer_trials_than_budget():
            return Room.START
        counts = count(self._trials())
        done = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
        if done >= self.n_trials:
            return Room.DONE
        if done + counts[TrialState.RUNNING] < self.n_trials:
            return Room.START
        return Room.WAIT

    def admits(self, number: int) -> bool:
        """Whether the freshly asked trial ``number`` fits in the budget."""
        if number < self.n_trials:
            return True
        ahead = sum(1 for t in self._trials() if t.state != TrialState.RUNNING or t.number < number)
        return ahead < self.n_trials

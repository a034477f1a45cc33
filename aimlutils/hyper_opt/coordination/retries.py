"""Retries that continue: an interrupted trial's parameters queued again, and the trial that runs
them reporting its chain's learning curve, so a trial longer than a job goes on job after job."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial

from aimlutils.hyper_opt.coordination.records import ORIGIN_ATTR, RETRIES_ATTR, RETRY_OF_ATTR, origin_of


def requeue(study: optuna.Study, trial: FrozenTrial | optuna.Trial, max_retries: int) -> bool:
    """Queue ``trial``'s parameters again, unless they were already retried ``max_retries`` times.

    The queued trial continues ``trial`` (its ``retry_of``): same checkpoint directory, and
    ``trial``'s intermediate values (:func:`continue_trial`). A retry counts against
    ``max_retries`` only when ``trial`` made no progress (reported no step its chain had not), so a
    trial longer than a job's time limit is continued job after job, while one that dies each time
    before reaching anything new is given up. ``max_retries: 0`` never queues.

    Idempotent: a worker killed between queueing its interrupted trial and failing it leaves the
    trial RUNNING, and the sweep that fails it later must not queue the parameters twice.
    """
    retries = int(trial.user_attrs.get(RETRIES_ATTR, 0))
    if max_retries <= 0 or retries >= max_retries or not trial.params:
        return False
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if any(t.user_attrs.get(RETRY_OF_ATTR) == trial.number for t in trials.values()):
        return False
    stored = trials.get(trial.number)
    steps = set(stored.intermediate_values) if stored is not None else set()
    before = trials.get(trial.user_attrs.get(RETRY_OF_ATTR, -1))
    progressed = bool(steps - set(before.intermediate_values if before is not None else ()))
    attrs: dict[str, Any] = {RETRY_OF_ATTR: trial.number, RETRIES_ATTR: retries + (0 if progressed else 1)}
    origin = origin_of(trial)
    if origin != trial.number:
        attrs[ORIGIN_ATTR] = origin
    study.enqueue_trial(trial.params, user_attrs=attrs)
    return True


def chain(study: optuna.Study, trial: FrozenTrial | optuna.Trial) -> list[FrozenTrial]:
    """The trials ``trial`` continues, the latest first (each one's ``retry_of``, back to the first)."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    out: list[FrozenTrial] = []
    number, seen = trial.user_attrs.get(RETRY_OF_ATTR), set()
    while isinstance(number, int) and number in trials and number not in seen:
        seen.add(number)
        out.append(trials[number])
        number = trials[number].user_attrs.get(RETRY_OF_ATTR)
    return out


def inherited_values(study: optuna.Study, trial: FrozenTrial | optuna.Trial) -> dict[int, float]:
    """The intermediate values of the trials ``trial`` continues, by step (the latest trial's
    value where two reported the same step)."""
    values: dict[int, float] = {}
    for earlier in chain(study, trial):
        for step, value in earlier.intermediate_values.items():
            values.setdefault(step, value)
    return values


def continue_trial(study: optuna.Study, trial: optuna.Trial) -> int:
    """Report the values of the trials ``trial`` continues, so the pruner sees one learning curve.

    Nothing happens for a trial that continues none, or in a study of several metrics (Optuna
    prunes single-objective studies only). Returns the number of values reported.
    """
    if RETRY_OF_ATTR not in trial.user_attrs or len(study.directions) != 1:
        return 0
    values = inherited_values(study, trial)
    for step in sorted(values):
        trial.report(values[step], step)
    return len(values)

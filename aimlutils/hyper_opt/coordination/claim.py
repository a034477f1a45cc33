"""Claiming a place in the budget: check, ask and take ownership of a new trial, under one lock."""

from __future__ import annotations

import warnings
from typing import Any

import optuna

from aimlutils.hyper_opt.coordination.budget import Room, TrialBudget
from aimlutils.hyper_opt.coordination.owners import RunningTrials
from aimlutils.hyper_opt.storage.locks import FileLock


def claim_trial(
    study: optuna.Study,
    budget: TrialBudget,
    lock: FileLock,
    owners: RunningTrials,
    identity: dict[str, Any],
) -> optuna.Trial | Room:
    """A new trial owned by the worker ``identity``, or why there is none (:class:`Room`).

    The lock covers the budget check, the ask and the owner file, so no other worker counts the
    budget between them, and a trial never exists without an owner for longer than a file write.

    When the lock is taken, the budget is asked once before queueing for it too. A worker told
    the study is done or full then leaves without joining the queue (when a thousand trials end
    together, most of the queue), and one that goes on has read the storage's news first: a
    journal replays every entry the other workers wrote since its last claim, which would
    otherwise hold up everyone queued behind it. A study never stops being done, and a full study
    that gains room is seen at the worker's next poll, so the answer without the lock is never
    wrong for long. A free lock is taken at once, and the budget asked once, under it.
    """
    if not lock.acquire(blocking=False):
        room = budget.check()
        if room is not Room.START:
            return room
        lock.acquire()
    try:
        room = budget.check()
        if room is not Room.START:
            return room
        with warnings.catch_warnings():
            # Optuna warns that heartbeats belong to study.optimize; workers run the same
            # heartbeat thread around each trial themselves (aimlutils.hyper_opt.worker).
            warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
            trial = study.ask()
        owners.mark(trial.number, identity)
    finally:
        lock.release()
    return trial

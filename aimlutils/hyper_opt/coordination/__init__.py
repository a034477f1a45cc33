"""How many workers share one study without a coordinator: the layer between the study and the worker.

- :mod:`~.budget`: ``n_trials`` finished trials exactly; a query (:class:`Room`), nothing more.
- :mod:`~.claim`: budget check, ask and ownership of a new trial under the study's claim lock
  (:class:`~aimlutils.hyper_opt.storage.locks.FileLock`).
- :mod:`~.failures`: the failure budget: a study whose objective keeps failing stops.
- :mod:`~.nodes`: a node whose trials all fail while others succeed is left out of the study.
- :mod:`~.lifecycle`: :class:`TrialLife`, a trial's life from claim to record, in one place.
- :mod:`~.owners`: which worker runs each RUNNING trial (``save_path/running/``).
- :mod:`~.liveness`: is that worker alive: its pid on this host, its job in the queue elsewhere.
- :mod:`~.recovery`: dead workers' trials failed and their parameters queued again;
  :mod:`~.retries`: the trial that runs them continues the one that stopped.
- :mod:`~.study`: creating or loading the shared study.
- :mod:`~.turns`: periodic jobs (that recovery) done by one worker of the study at a time.
- :mod:`~.records`: what is stored on each trial, in one write.
- :mod:`~.results_csv`: ``trial_results.csv``, one row per finished trial, from many workers.
"""

from aimlutils.hyper_opt.coordination.budget import Room, TrialBudget, count, target_trial
from aimlutils.hyper_opt.coordination.claim import claim_trial
from aimlutils.hyper_opt.coordination.failures import StudyStop
from aimlutils.hyper_opt.coordination.lifecycle import FINISHED_ELSEWHERE, TrialLife
from aimlutils.hyper_opt.coordination.liveness import JobAlive, Liveness, QueueQuery, alive, process_is_gone
from aimlutils.hyper_opt.coordination.nodes import BadNodes, NodeEvidence, NodeState, judge
from aimlutils.hyper_opt.coordination.owners import RunningTrials
from aimlutils.hyper_opt.coordination.records import (
    APPLIED_ATTR,
    ORIGIN_ATTR,
    RECORD_ATTR,
    RETRIES_ATTR,
    RETRY_OF_ATTR,
    make_record,
    origin_of,
    read_record,
    write_record,
)
from aimlutils.hyper_opt.coordination.recovery import fail_dead_trials, recover_study, sweep_dead_trials
from aimlutils.hyper_opt.coordination.results_csv import FINISHED, ResultsCsv, trial_row
from aimlutils.hyper_opt.coordination.retries import continue_trial, inherited_values, requeue
from aimlutils.hyper_opt.coordination.turns import StudyTurn
from aimlutils.hyper_opt.storage.locks import FileLock

__all__ = [
    "APPLIED_ATTR",
    "FINISHED",
    "FINISHED_ELSEWHERE",
    "ORIGIN_ATTR",
    "RECORD_ATTR",
    "RETRIES_ATTR",
    "RETRY_OF_ATTR",
    "BadNodes",
    "FileLock",
    "JobAlive",
    "Liveness",
    "NodeEvidence",
    "NodeState",
    "QueueQuery",
    "ResultsCsv",
    "Room",
    "RunningTrials",
    "StudyStop",
    "StudyTurn",
    "TrialBudget",
    "TrialLife",
    "alive",
    "claim_trial",
    "continue_trial",
    "count",
    "fail_dead_trials",
    "inherited_values",
    "judge",
    "make_record",
    "origin_of",
    "process_is_gone",
    "read_record",
    "recover_study",
    "requeue",
    "sweep_dead_trials",
    "target_trial",
    "trial_row",
    "write_record",
]

"""What the package stores on each trial in the study, in as few storage writes as it can.

A finished trial carries one user attribute, written in one storage operation: every value
``train`` returned, the worker that ran it, and why it failed. One write matters: on a journal
file each write takes a lock and an fsync, and trials of cheap models are dominated by them.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial

#: The user attribute holding ``{"results": {...}, "worker": {...}, "fail_reason": "...", "repro": {...},
#: "timing": {...}}`` (``repro``: :mod:`aimlutils.hyper_opt.objective.reproduce`; ``timing``, when the
#: trial saved its checkpoints: :mod:`~.wall_time`).
RECORD_ATTR = "record"
#: ``{name: value}`` written into the model config where it differs from ``trial.params[name]``.
APPLIED_ATTR = "applied"
#: Set on a re-queued trial: the number of the trial whose parameters it runs again.
RETRY_OF_ATTR = "retry_of"
#: Set on a re-queued trial: how many times its parameters have been re-queued without progress.
RETRIES_ATTR = "retries"
#: Set on a re-queued trial whose chain of continued trials is longer than one: the first trial of
#: the chain, whose number names the checkpoint directory they share (else it is ``retry_of``).
ORIGIN_ATTR = "origin_trial"


def make_record(**fields: Any) -> dict[str, Any]:
    """A trial's record from ``fields`` (``results``, ``worker``, ``fail_reason``, ``repro``).

    Example:
        >>> make_record(results={"loss": 0.5}, fail_reason=None)
        {'results': {'loss': 0.5}}
    """
    return {k: v for k, v in fields.items() if v is not None}


def write_record(trial: optuna.trial.BaseTrial, **fields: Any) -> None:
    """Store ``fields`` on ``trial`` in one write of its own (outside a worker, which stores a
    trial's record with the trial's end: :mod:`aimlutils.hyper_opt.coordination.lifecycle`)."""
    trial.set_user_attr(RECORD_ATTR, make_record(**fields))


def origin_of(trial: FrozenTrial | optuna.trial.BaseTrial) -> int:
    """The first trial of ``trial``'s chain: itself, unless it continues an interrupted trial."""
    attrs = trial.user_attrs
    origin = attrs.get(ORIGIN_ATTR, attrs.get(RETRY_OF_ATTR))
    return int(origin) if isinstance(origin, int) else int(trial.number)


def read_record(trial: FrozenTrial) -> dict[str, Any]:
    record = trial.user_attrs.get(RECORD_ATTR)
    return record if isinstance(record, dict) else {}


def node_of(trial: FrozenTrial) -> str | None:
    """The node that ran ``trial`` (its scheduler's node name, else its host), when recorded."""
    node = (read_record(trial).get("worker") or {}).get("node")
    return node if isinstance(node, str) and node else None

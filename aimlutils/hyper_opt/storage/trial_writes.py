"""How a trial's own writes reach the storage: its record, and the trial as it ends.

Each write of a trial costs a commit: on a journal file a lock and an fsync, on a database a round
trip (and on SQLite an fsync). The package adds a record to each trial; a storage kind whose
writes can carry it holds it back (:meth:`TrialWrites.hold_attr`, a call the trial's lifecycle
makes in plain sight) and stores it with the trial's finishing write, so a worker costs no commit
that plain ``study.optimize`` does not make. This base class is what a kind without such a way
gets: the record is a write of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from aimlutils.hyper_opt import _optuna


class TrialWrites:
    """A kind's way of writing a trial's attribute with its end, and of reading the told trial.

    ``storage`` is the storage the study uses (it waits out outages); a kind's subclass may write
    through a handle of its own, given when the kind opened the storage.

    Example:
        >>> study = optuna.create_study()
        >>> trial = study.ask()
        >>> TrialWrites().hold_attr(_optuna.study_storage(study), _optuna.trial_id(trial), "note", 1)
        >>> study.trials[0].user_attrs
        {'note': 1}
    """

    def hold_attr(self, storage: BaseStorage, trial_id: int, key: str, value: Any) -> None:
        """Store ``key: value`` on the trial with its finishing write, or (here) at once."""
        storage.set_trial_user_attr(trial_id, key, value)

    def drop(self, trial_id: int) -> None:
        """Forget what is held for the trial: its finishing write was refused (it ended elsewhere)."""

    def told(
        self, storage: BaseStorage, trial: optuna.Trial, state: TrialState, values: Sequence[float] | None
    ) -> FrozenTrial:
        """``trial`` as the storage holds it once told ``state`` and ``values`` (for its CSV row)."""
        return storage.get_trial(_optuna.trial_id(trial))

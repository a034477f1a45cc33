"""The class a user's ``Objective`` builds on (import path kept from the original package).

A user's ``objective.py``::

    from aimlutils.hyper_opt.objective.base import *

    class Objective(BaseObjective):
        def __init__(self, study, config, metric="val_loss", device="cpu"):
            BaseObjective.__init__(self, study, config, metric, device)

        def train(self, trial, conf):
            ...  # train with conf, call trial.report(...) each epoch
            return {"val_loss": 0.25, "val_accuracy": 0.91}

A trial that may outlast its job keeps a checkpoint in ``self.checkpoint_dir(trial)`` (the same
directory for the trial that continues it) and calls ``self.stop_if_requested()`` after each save.
"""

from __future__ import annotations

import contextlib
import copy
import marshal
import math
import numbers
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from aimlutils.hyper_opt.coordination.records import (
    APPLIED_ATTR,
    RETRY_OF_ATTR,
    make_record,
    origin_of,
    write_record,
)
from aimlutils.hyper_opt.coordination.wall_time import checkpoint_saved
from aimlutils.hyper_opt.errors import HyperOptError
from aimlutils.hyper_opt.paths import StudyPaths
from aimlutils.hyper_opt.search_space import SearchSpace, suggest_from_spec
from aimlutils.hyper_opt.stop import stop_if_requested, stop_requested

if TYPE_CHECKING:
    from aimlutils.hyper_opt.objective.reproduce import Recorder

__all__ = ["BaseObjective", "TrialResultError", "optuna", "suggest_from_spec"]


class TrialResultError(HyperOptError, ValueError):
    """``train`` returned something the study cannot record; the trial fails with this message."""


class BaseObjective:
    """Runs one trial: copies the model config, applies the trial's values, trains, records.

    ``__init__`` takes the original package's arguments ``(study, config, metric, device)``; the
    echo-opt form ``(config, metric)`` works too. ``config`` is the model config.
    """

    #: Set by the worker for an ``mlflow`` section: opens the trial's MLflow run around it. A class
    #: default, so an Objective whose ``__init__`` skips this one's still runs.
    mlflow_run: Callable[[Any], contextlib.AbstractContextManager[object]] | None = None
    #: Set by the worker: the study's ``save_path`` layout, where checkpoints go.
    study_paths: StudyPaths | None = None
    #: Set by the worker: keeps each trial's applied config and what its record says of it.
    recorder: Recorder | None = None
    #: Set by the worker: :meth:`save` leaves each trial's record here, by trial number, and the
    #: worker stores it with the trial's end, in the same write. Outside a worker (``None``) the
    #: record is stored on the trial at once.
    held_records: dict[int, dict[str, Any]] | None = None
    #: The temporary folder that holds checkpoints outside a worker (made when first needed).
    scratch_dir: Path | None = None

    def __init__(
        self,
        study: Any = None,
        config: Mapping[str, Any] | None = None,
        metric: str | list[str] = "val_loss",
        device: str = "cpu",
    ) -> None:
        if isinstance(study, Mapping) and not isinstance(config, Mapping):
            # echo-opt style: BaseObjective.__init__(self, config, metric[, device])
            if config is not None:
                metric, device = config, (metric if _looks_like_device(metric) else device)
            study, config = None, study
        self.study = study
        self.config: dict[str, Any] = dict(config or {})
        self.metric = metric
        self.device = device
        #: How many GPUs the trial has (``gpus_per_trial``; 0 on CPU). ``device`` is the first.
        self.gpus = 1 if str(device).startswith("cuda") else 0
        self.worker_index: int | None = None
        # Set by the worker: the search space, the `optuna` section and custom_updates.
        self.search_space = SearchSpace()
        self.optuna_section: dict[str, Any] = dict(self.config.get("optuna", {}))
        self.custom_updates: Callable[[Any, dict[str, Any]], Any] | None = None
        #: Who runs the trials (host, pid, job id), stored with each trial's results.
        self.worker_identity: dict[str, Any] | None = None

    @property
    def metrics(self) -> list[str]:
        return list(self.metric) if isinstance(self.metric, (list, tuple)) else [self.metric]

    def update_config(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        """The model config for ``trial``: a deep copy with the trial's values applied.

        Inline markers in the model config are replaced by their values here. Where the value
        written differs from the suggestion (``depends_on`` with ``multiply``), the written values
        are stored in the trial's ``applied`` user attribute, so they can be checked afterwards;
        ``trial.params`` keeps the suggestions the sampler learns from.
        """
        conf = _copy(self.config)
        conf["optuna"] = _copy(self.optuna_section)
        values = self.search_space.suggest(trial)
        self.search_space.apply(conf, values)
        applied = self.search_space.applied_values(conf)
        if applied:  # one more storage write, only for studies with dependent parameters
            trial.set_user_attr(APPLIED_ATTR, applied)
        if self.custom_updates is not None:
            updated = self.custom_updates(trial, conf)
            conf = updated if isinstance(updated, dict) else conf
        return conf

    def train(self, trial: optuna.trial.BaseTrial, conf: dict[str, Any]) -> Mapping[str, Any]:
        """Train a model with ``conf`` and return a dict that holds the metric(s)."""
        raise NotImplementedError("an Objective must define train(self, trial, conf)")

    def checkpoint_dir(self, trial: optuna.trial.BaseTrial) -> Path:
        """The trial's checkpoint directory, made if missing: ``save_path/checkpoints/trial_N``.

        A trial that continues an interrupted one gets that one's directory (N is the first
        trial of the chain), so ``train`` finds its last checkpoint there; a new trial gets an
        empty one. Outside a worker (a unit test with a ``FixedTrial``) it is a new temporary
        directory.
        """
        if self.study_paths is None:
            if self.scratch_dir is None:
                self.scratch_dir = Path(tempfile.mkdtemp(prefix="aimlutils-checkpoints-"))
            folder = self.scratch_dir / f"trial_{origin_of(trial)}"
        else:
            folder = self.study_paths.checkpoint(origin_of(trial))
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @staticmethod
    def continues(trial: optuna.trial.BaseTrial) -> int | None:
        """The number of the interrupted trial ``trial`` continues, or ``None``."""
        number = trial.user_attrs.get(RETRY_OF_ATTR)
        return number if isinstance(number, int) else None

    @staticmethod
    def stop_requested() -> bool:
        """Whether the worker was asked to stop (the job's time limit is near, scancel, Ctrl-C).

        Check between epochs, after saving: the trial that continues this one starts there.
        """
        return stop_requested()

    @staticmethod
    def checkpoint_saved() -> None:
        """Say that ``train`` saved a checkpoint just now, when it saves them its own way
        (``TorchCheckpoint`` and ``KerasCheckpoint`` say it themselves). The worker learns how long
        trials take to a checkpoint, starts none that would not reach one before its job's end,
        and after this one may ask the trial to stop (``optuna.fit_wall_time``): call
        :meth:`stop_if_requested` next."""
        checkpoint_saved()

    @staticmethod
    def stop_if_requested() -> None:
        """Leave ``train`` when a stop was requested (raises
        :class:`~aimlutils.hyper_opt.stop.TrialInterrupted`); the trial is continued later."""
        stop_if_requested()

    def save(self, trial: optuna.trial.BaseTrial, results: Any) -> float | list[float]:
        """Check what ``train`` returned, record it on the trial, and return the metric value(s)."""
        values = check_results(results, self.metrics)
        stored = {str(k): _jsonable(v) for k, v in results.items()}
        fields = {"results": stored, "worker": self.worker_identity, "repro": self.repro_fields(trial)}
        if self.held_records is not None:
            self.held_records[trial.number] = make_record(**fields)
        else:
            write_record(trial, **fields)
        return values[0] if len(values) == 1 else values

    def repro_fields(self, trial: optuna.trial.BaseTrial) -> dict[str, Any] | None:
        """What ``trial``'s record keeps to run it again (ids of its environment and config)."""
        if self.recorder is None:
            return None
        return self.recorder.fields(trial.number) or None

    def __call__(self, trial: optuna.trial.BaseTrial) -> float | list[float]:
        with self.mlflow_run(trial) if self.mlflow_run is not None else contextlib.nullcontext():
            conf = self.update_config(trial)
            if self.recorder is not None:
                self.recorder.note_config(trial.number, conf)
            results = self.train(trial, conf)
            return self.save(trial, results)


def _copy(value: Any) -> Any:
    """A deep copy of YAML data (dicts, lists, scalars), several times faster than ``deepcopy``:
    through ``marshal`` (C code) when it holds only the types marshal knows, else a walk.

    Example:
        >>> import datetime
        >>> conf = {"a": [1, {"b": 2.0}], "when": datetime.date(2026, 1, 1)}
        >>> copied = _copy(conf)
        >>> copied == conf, copied["a"][1] is conf["a"][1]
        (True, False)
    """
    try:
        return marshal.loads(marshal.dumps(value))  # noqa: S302 - bytes made here, a line above
    except ValueError:  # a date, a custom tag's object
        return _walk_copy(value)


def _walk_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _walk_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk_copy(v) for v in value]
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    return copy.deepcopy(value)


def _looks_like_device(value: Any) -> bool:
    return isinstance(value, str) and value.split(":")[0] in ("cpu", "cuda", "gpu", "mps")


def check_results(results: Any, metrics: list[str]) -> list[float]:
    """The metric values in ``results``, or :class:`TrialResultError` naming what is wrong."""
    if not isinstance(results, Mapping):
        raise TrialResultError(
            f"train() returned {type(results).__name__}, not a dict; return e.g. {{{metrics[0]!r}: value}}"
        )
    values = []
    for name in metrics:
        if name not in results:
            raise TrialResultError(
                f"train() returned no {name!r} (the metric in optuna.metric); "
                f"it returned keys {sorted(results)}"
            )
        value = results[name]
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TrialResultError(f"train() returned {name}={value!r}, which is not a number")
        if not math.isfinite(float(value)):
            raise TrialResultError(f"train() returned {name}={float(value)}, which is not finite")
        values.append(float(value))
    return values


_JSON_TYPES = frozenset({float, int, str, bool})


def _jsonable(value: Any) -> Any:
    """Results go into the study's storage, which holds JSON: numbers become floats, others text."""
    if value is None or type(value) in _JSON_TYPES:  # the usual case, without the ABC checks below
        return value
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    try:
        return float(value)  # 0-d arrays and tensors
    except (TypeError, ValueError):
        return str(value)

"""Helpers for training loops (import path kept from the original package).

``from aimlutils.hyper_opt.utils import KerasPruningCallback`` works without Keras installed;
Keras is needed only when the callback is created. :func:`report_and_prune` is the same step for a
plain training loop (PyTorch or anything else) and needs nothing beyond Optuna;
:func:`LightningPruningCallback` hands PyTorch Lightning over to Optuna's own integration.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from typing import Any

import optuna

from aimlutils.hyper_opt.search_space import suggest_from_spec

__all__ = [
    "KerasPruningCallback",
    "LightningPruningCallback",
    "report_and_prune",
    "suggest_from_spec",
    "trial_suggest_loader",
]

#: echo-opt's name for :func:`suggest_from_spec`, for ``custom_updates`` written for it.
trial_suggest_loader = suggest_from_spec


def report_and_prune(trial: optuna.trial.BaseTrial, value: Any, step: int) -> None:
    """Report ``value`` at ``step`` and raise :class:`optuna.TrialPruned` if the pruner says stop.

    ``value`` may be anything ``float()`` accepts, such as a one-element tensor. Call it once per
    epoch in place of the ``trial.report`` / ``trial.should_prune`` pair (a ``FixedTrial``, as
    in a unit test of an Objective, never prunes):

        >>> trial = optuna.trial.FixedTrial({})
        >>> for epoch in range(3):
        ...     val_loss = 1.0 / (epoch + 1)
        ...     report_and_prune(trial, val_loss, epoch)
    """
    value = float(value)
    trial.report(value, step=step)
    if trial.should_prune():
        raise optuna.TrialPruned(f"pruned at step {step} (value={value:.6g})")


@functools.cache
def _keras_callback_class() -> type:
    try:
        import keras
    except ImportError as err:
        raise ImportError("KerasPruningCallback needs Keras: pip install 'aimlutils[keras]'") from err

    class _KerasPruningCallback(keras.callbacks.Callback):
        def __init__(self, trial: optuna.trial.BaseTrial, monitor: str, interval: int = 1) -> None:
            super().__init__()
            self.trial, self.monitor, self.interval = trial, monitor, interval

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if (epoch + 1) % self.interval:
                return
            value = (logs or {}).get(self.monitor)
            if value is None:
                warnings.warn(
                    f"KerasPruningCallback: metric {self.monitor!r} is not in this epoch's logs "
                    f"({sorted(logs or {})}); nothing reported",
                    stacklevel=2,
                )
                return
            self.trial.report(float(value), step=epoch)
            if self.trial.should_prune():
                # Raised from inside fit(), TrialPruned ends training and marks the trial PRUNED.
                raise optuna.TrialPruned(f"pruned at epoch {epoch} ({self.monitor}={float(value):.6g})")

    return _KerasPruningCallback


class KerasPruningCallback:
    """Reports ``monitor`` to Optuna after every ``interval`` epochs and stops a pruned trial.

    Example::

        callbacks = [KerasPruningCallback(trial, "val_loss", interval=1)]
        model.fit(x, y, validation_data=(xv, yv), callbacks=callbacks)
    """

    def __new__(cls, trial: optuna.trial.BaseTrial, monitor: str, interval: int = 1) -> Any:
        return _keras_callback_class()(trial, monitor, interval)


def LightningPruningCallback(trial: optuna.trial.Trial, monitor: str) -> Any:
    """A PyTorch Lightning callback that reports ``monitor`` each validation epoch and prunes.

    This is ``optuna_integration.PyTorchLightningPruningCallback``, imported on first use so this
    module still imports without Lightning. A pruned trial ends ``Trainer.fit`` with
    :class:`optuna.TrialPruned`. Needs ``pip install 'aimlutils[lightning]'``.
    """
    try:
        # import_module: optuna-integration ships no type hints, and mypy must pass without it.
        integration = importlib.import_module("optuna_integration")
        callback_class = integration.PyTorchLightningPruningCallback
        importlib.import_module("lightning.pytorch")
    except ImportError as err:
        raise ImportError(
            "LightningPruningCallback needs lightning and optuna-integration: "
            "pip install 'aimlutils[lightning]'"
        ) from err
    return callback_class(trial, monitor=monitor)

"""Helpers for training loops (import path kept from the original package).

``from aimlutils.hyper_opt.objective.training import KerasPruningCallback`` works without Keras installed;
Keras is needed only when the callback is created. :func:`report_and_prune` is the same step for a
plain training loop (PyTorch or anything else) and needs nothing beyond Optuna;
:func:`LightningPruningCallback` hands PyTorch Lightning over to Optuna's own integration.

Checkpoints, for trials that continue where they stopped: :class:`TorchCheckpoint` and
:class:`KerasCheckpoint` save and restore model, optimizer and epoch in one line each, in the
directory ``BaseObjective.checkpoint_dir(trial)`` gives; :func:`stop_if_requested` leaves a
trial once the worker is asked to stop (the job's time limit is near). Torch and Keras are imported
when a checkpoint is made, not with this module.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import warnings
from pathlib import Path
from typing import Any

import optuna

from aimlutils.hyper_opt.coordination.wall_time import checkpoint_saved
from aimlutils.hyper_opt.search_space import suggest_from_spec
from aimlutils.hyper_opt.stop import TrialInterrupted, stop_if_requested, stop_requested

__all__ = [
    "KerasCheckpoint",
    "KerasPruningCallback",
    "LightningPruningCallback",
    "TorchCheckpoint",
    "TrialInterrupted",
    "checkpoint_saved",
    "report_and_prune",
    "stop_if_requested",
    "stop_requested",
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


def _keras(feature: str) -> Any:
    """Keras, imported when a feature that needs it is first used; the error names the extra."""
    try:
        import keras
    except ImportError as err:
        raise ImportError(f"{feature} needs Keras: pip install 'aimlutils[keras]'") from err
    return keras


@functools.cache
def _keras_callback_class() -> type:
    callback: Any = _keras("KerasPruningCallback").callbacks.Callback

    class _KerasPruningCallback(callback):
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


def _main_rank() -> bool:
    """Whether this process writes checkpoints: rank 0 of a ``torch.distributed`` job, or alone."""
    dist = importlib.import_module("torch.distributed")
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class TorchCheckpoint:
    """Model, optimizer (and scheduler), epoch and random state of a PyTorch loop, in one file.

    Made at the start of ``train``, it restores the last checkpoint in ``directory`` when there
    is one; :attr:`epoch` is then the epoch to start from (0 for a new trial). :meth:`save` after
    each epoch writes the file anew, atomically; under ``torch.distributed`` only rank 0 writes.
    The random state comes back too, so on CPU a continued trial trains as the uninterrupted one
    would have::

        checkpoint = TorchCheckpoint(self.checkpoint_dir(trial), model, optimizer)
        for epoch in range(checkpoint.epoch, epochs):
            ...                                          # train, evaluate
            report_and_prune(trial, val_loss, epoch)     # report first: a stop never leaves a gap
            checkpoint.save(epoch, loss=train_loss)      # model + optimizer + epoch (+ your numbers)
            self.stop_if_requested()                     # the job ends soon: leave, to be continued

    ``extra`` keyword arguments of :meth:`save` (numbers, text, tensors) come back in :attr:`extra`.
    """

    FILE = "checkpoint.pt"

    def __init__(
        self,
        directory: str | os.PathLike[str],
        model: Any,
        optimizer: Any = None,
        scheduler: Any = None,
        map_location: Any = "cpu",
    ) -> None:
        try:
            self._torch = importlib.import_module("torch")
        except ImportError as err:
            raise ImportError("TorchCheckpoint needs PyTorch: pip install 'aimlutils[torch]'") from err
        self.path = Path(directory) / self.FILE
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        #: The first epoch to run: 0, or the one after the restored checkpoint's.
        self.epoch = 0
        #: Whether a checkpoint was restored.
        self.restored = False
        #: What :meth:`save` was given besides the epoch.
        self.extra: dict[str, Any] = {}
        if self.path.exists():
            self._restore(map_location)

    def _restore(self, map_location: Any) -> None:
        torch = self._torch
        state = torch.load(self.path, map_location=map_location, weights_only=True)
        self.model.load_state_dict(state["model"])
        for name in ("optimizer", "scheduler"):
            part = getattr(self, name)
            if part is not None and state.get(name) is not None:
                part.load_state_dict(state[name])
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.epoch, self.extra, self.restored = int(state["epoch"]) + 1, dict(state.get("extra", {})), True

    def save(self, epoch: int, **extra: Any) -> None:
        """Write the checkpoint after ``epoch`` (the next run starts at ``epoch + 1``)."""
        torch = self._torch
        self.extra = dict(extra)
        if not _main_rank():
            return
        state = {
            "epoch": int(epoch),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "extra": self.extra,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.FILE}.{os.getpid()}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)  # whole or not at all: a stop mid-save keeps the last checkpoint
        checkpoint_saved()  # its time goes with the trial, and may ask it to stop here


_KERAS_FILE = re.compile(r"^epoch-(\d+)\.weights\.h5$")


@functools.cache
def _keras_checkpoint_class() -> type:
    keras = _keras("KerasCheckpoint")
    callback: Any = keras.callbacks.Callback

    class _KerasCheckpoint(callback):
        def __init__(self, directory: Path, stop_on_request: bool) -> None:
            super().__init__()
            self.directory, self.stop_on_request = directory, stop_on_request

        def _saved(self) -> list[tuple[int, Path]]:
            if not self.directory.is_dir():
                return []
            found = [(_KERAS_FILE.match(p.name), p) for p in self.directory.iterdir()]
            return sorted((int(m.group(1)), p) for m, p in found if m)

        def restore(self, model: Any) -> int:
            saved = self._saved()
            if not saved:
                return 0
            epoch, path = saved[-1]
            # Built first, so that its state (moments, step count) is read from the file too.
            model.optimizer.build(model.trainable_variables)
            model.load_weights(path)
            return epoch + 1

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"epoch-{epoch:05d}.weights.h5"
            tmp = self.directory / f".tmp-{os.getpid()}.weights.h5"
            self.model.save_weights(tmp)
            os.replace(tmp, path)  # whole or not at all: a stop mid-save keeps the last checkpoint
            for old, older in self._saved():
                if old < epoch:
                    older.unlink(missing_ok=True)
            checkpoint_saved()  # its time goes with the trial, and may ask it to stop here
            # After the last epoch the trial is done: a stop then would cost a run to finish it.
            last = epoch + 1 >= (self.params or {}).get("epochs", float("inf"))
            if self.stop_on_request and not last:
                stop_if_requested()  # raised out of fit(): the trial is continued from here

    return _KerasCheckpoint


class KerasCheckpoint:
    """A Keras callback that saves weights and optimizer state after every epoch, and restores them.

    ``restore(model)`` (the model compiled) loads the last checkpoint in ``directory`` and returns
    the epoch to start from (0 when there is none), for ``fit``'s ``initial_epoch``. After saving,
    the callback leaves ``fit`` with :class:`~aimlutils.hyper_opt.stop.TrialInterrupted` when the
    worker was asked to stop, except after the last epoch, when the trial is done
    (``stop_on_request=False`` leaves that to you)::

        checkpoint = KerasCheckpoint(self.checkpoint_dir(trial))
        model.fit(..., epochs=epochs, initial_epoch=checkpoint.restore(model),
                  callbacks=[KerasPruningCallback(trial, "val_loss"), checkpoint])

    Put it after the pruning callback, so an epoch is reported before it is saved.
    """

    def __new__(cls, directory: str | os.PathLike[str], stop_on_request: bool = True) -> Any:
        return _keras_checkpoint_class()(Path(directory), stop_on_request)

"""KerasPruningCallback with Keras 3 on TensorFlow (the Keras example runs in test_examples.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

from aimlutils.hyper_opt.utils import KerasPruningCallback
from tests.conftest import needs_module

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def keras() -> Any:
    needs_module("tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


def _fit(keras: Any, trial: optuna.trial.BaseTrial, monitor: str, epochs: int, interval: int = 1) -> Any:
    """Fit a tiny regression model, with the seed's call to the callback."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = x @ np.array([1.0, -2.0, 0.5, 0.0], dtype="float32")
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    return model.fit(
        x,
        y,
        validation_split=0.25,
        epochs=epochs,
        batch_size=16,
        verbose=0,
        callbacks=[KerasPruningCallback(trial, monitor, interval=interval)],
    )


def _values(trial: optuna.trial.Trial) -> dict[int, float]:
    return trial.study._storage.get_trial(trial._trial_id).intermediate_values


def test_the_callback_is_a_keras_callback(keras):
    trial = optuna.create_study().ask()
    assert isinstance(KerasPruningCallback(trial, "val_loss", interval=1), keras.callbacks.Callback)


def test_each_epochs_metric_reaches_the_trial(keras):
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    history = _fit(keras, trial, "val_loss", epochs=3)
    assert _values(trial) == pytest.approx(dict(enumerate(history.history["val_loss"])))


def test_interval_reports_every_nth_epoch(keras):
    trial = optuna.create_study(pruner=optuna.pruners.NopPruner()).ask()
    history = _fit(keras, trial, "loss", epochs=4, interval=2)
    losses = history.history["loss"]
    assert _values(trial) == pytest.approx({1: losses[1], 3: losses[3]})


def test_a_pruned_trial_raises_trial_pruned_out_of_fit(keras):
    # Any val_loss above 0 is pruned at the first report.
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0))
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned, match="epoch 0"):
        _fit(keras, trial, "val_loss", epochs=5)
    assert list(_values(trial)) == [0]  # training stopped after the first epoch


def test_a_pruned_objective_is_recorded_pruned(keras):
    def objective(trial: optuna.Trial) -> float:
        return float(_fit(keras, trial, "val_loss", epochs=5).history["val_loss"][-1])

    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0))
    study.optimize(objective, n_trials=1)
    assert study.trials[0].state == optuna.trial.TrialState.PRUNED
    assert list(study.trials[0].intermediate_values) == [0]


def test_a_metric_missing_from_the_logs_warns_and_reports_nothing(keras):
    trial = optuna.create_study().ask()
    with pytest.warns(UserWarning, match=r"'val_acc' is not in this epoch's logs.*'val_loss'"):
        _fit(keras, trial, "val_acc", epochs=2)
    assert _values(trial) == {}

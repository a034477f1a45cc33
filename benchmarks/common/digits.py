"""The digits MLP of ``examples/torch`` (its data, model and evaluation), as a clocked benchmark objective.

Each epoch trains for real on the CPU, then waits on the virtual clock for the CPU time it took
(``time.thread_time``: the thread's own, whatever else runs), so trials with bigger models or
smaller batches take longer, trials end out of order, and the pruner sees other trials' epochs
as they would arrive on a cluster.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import optuna

from benchmarks.common.virtual_clock import ClockedObjective

#: Model initialisation draws from torch's one global generator: one thread at a time.
_INIT_LOCK = threading.Lock()
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "torch" / "objective.py"

#: The example's search space (``examples/torch/hyper.yml``).
PARAMETERS: dict[str, Any] = {
    "num_dense": {"type": "int", "settings": {"name": "num_dense", "low": 1, "high": 3}},
    "model:dropout": {"type": "float", "settings": {"name": "dropout", "low": 0.0, "high": 0.5}},
    "optimizer:learning_rate": {
        "type": "loguniform",
        "settings": {"name": "lr", "low": 1.0e-4, "high": 3.0e-2},
    },
    "trainer:batch_size": {
        "type": "categorical",
        "settings": {"name": "batch_size", "choices": [32, 64, 128]},
    },
}


def model_config(epochs: int) -> dict[str, Any]:
    """The example's ``model.yml`` with ``epochs`` epochs."""
    return {
        "seed": 1000,
        "data": {"validation_fraction": 0.2},
        "model": {"hidden_dims": [64], "dropout": 0.1, "activation": "relu"},
        "optimizer": {"learning_rate": 0.001, "weight_decay": 0.0},
        "trainer": {"epochs": epochs, "batch_size": 64},
    }


@functools.cache
def example() -> ModuleType:
    """``examples/torch/objective.py``, imported once."""
    spec = importlib.util.spec_from_file_location("torch_example_objective", EXAMPLE)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {EXAMPLE}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.torch.set_num_threads(1)  # the benchmark's threads share a few cores
    return module


@functools.cache
def _data(seed: int, validation_fraction: float) -> list[Any]:
    return example().load_data(seed, validation_fraction)  # type: ignore[no-any-return]


class DigitsObjective(ClockedObjective):
    """The example's training loop, one virtual-clock wait per epoch; returns loss and accuracy."""

    def train(self, trial: optuna.trial.BaseTrial, conf: dict[str, Any]) -> dict[str, float]:
        ex = example()
        torch = ex.torch
        conf = ex.custom_updates(trial, conf)
        x_train, y_train, x_valid, y_valid = _data(conf["seed"], conf["data"]["validation_fraction"])
        m = conf["model"]
        with _INIT_LOCK:  # same initial weights for every trial, as in the example
            torch.manual_seed(conf["seed"])
            model = ex.build_model(x_train.shape[1], 10, m["hidden_dims"], m["dropout"], m["activation"])
        order = torch.Generator().manual_seed(conf["seed"])
        optimizer = torch.optim.Adam(model.parameters(), lr=conf["optimizer"]["learning_rate"])
        loss_fn = torch.nn.CrossEntropyLoss()
        for epoch in range(conf["trainer"]["epochs"]):
            started = time.thread_time()
            model.train()
            for idx in torch.randperm(len(x_train), generator=order).split(conf["trainer"]["batch_size"]):
                optimizer.zero_grad()
                loss_fn(model(x_train[idx]), y_train[idx]).backward()
                optimizer.step()
            val_loss, _ = ex.evaluate(model, loss_fn, x_valid, y_valid)
            self.clock.sleep(time.thread_time() - started)
            ex.report_and_prune(trial, val_loss, epoch)
        val_loss, val_accuracy = ex.evaluate(model, loss_fn, x_valid, y_valid)
        return {"val_loss": val_loss, "val_accuracy": val_accuracy}

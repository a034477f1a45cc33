"""report_and_prune, the report + prune step of a plain training loop, and the Lightning callback."""

from __future__ import annotations

import sys

import optuna
import pytest

from aimlutils.hyper_opt.utils import LightningPruningCallback, report_and_prune
from tests.conftest import needs_module


class _Scalar:
    """Stands in for a one-element tensor: only ``float()`` is needed."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __float__(self) -> float:
        return self.value


def _study(pruner: optuna.pruners.BasePruner) -> optuna.Study:
    return optuna.create_study(direction="minimize", pruner=pruner)


def test_reports_every_step_and_does_not_prune_when_the_pruner_says_go_on():
    study = _study(optuna.pruners.NopPruner())
    trial = study.ask()
    for step, value in enumerate([0.9, 0.5, _Scalar(0.25)]):
        report_and_prune(trial, value, step)
    study.tell(trial, 0.25)
    frozen = study.trials[0]
    assert frozen.intermediate_values == {0: 0.9, 1: 0.5, 2: 0.25}
    assert frozen.state == optuna.trial.TrialState.COMPLETE


def test_raises_trial_pruned_when_the_pruner_says_stop():
    # ThresholdPruner prunes as soon as a reported value is above `upper`.
    study = _study(optuna.pruners.ThresholdPruner(upper=1.0))
    trial = study.ask()
    report_and_prune(trial, 0.5, 0)
    with pytest.raises(optuna.TrialPruned, match="step 1"):
        report_and_prune(trial, 2.0, 1)
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {0: 0.5, 1: 2.0}


def test_a_pruned_objective_ends_pruned_with_its_last_value_kept():
    def objective(trial: optuna.Trial) -> float:
        for epoch in range(5):
            report_and_prune(trial, 10.0 - epoch if trial.number else 1.0, epoch)
        return 1.0

    study = _study(optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    study.optimize(objective, n_trials=2)
    first, second = study.trials
    assert first.state == optuna.trial.TrialState.COMPLETE
    assert second.state == optuna.trial.TrialState.PRUNED
    assert second.intermediate_values == {0: 10.0}


def test_a_torch_scalar_tensor_is_reported_as_a_float():
    needs_module("torch")
    import torch

    trial = _study(optuna.pruners.NopPruner()).ask()
    report_and_prune(trial, torch.tensor(0.125), 0)
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {0: 0.125}


def test_lightning_callback_prunes_a_real_trainer_run():
    needs_module("lightning")
    needs_module("optuna_integration")
    import lightning
    import torch

    class Linear(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def _loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            x, y = batch
            return torch.nn.functional.mse_loss(self.layer(x).squeeze(1), y)

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
            return self._loss(batch)

        def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
            self.log("val_loss", self._loss(batch))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters())

    torch.manual_seed(0)
    x = torch.randn(64, 4)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1)), batch_size=16)

    def objective(trial: optuna.Trial) -> float:
        trainer = lightning.Trainer(
            max_epochs=5,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[LightningPruningCallback(trial, "val_loss")],
        )
        trainer.fit(Linear(), data, data)
        return float(trainer.callback_metrics["val_loss"])

    # Any val_loss above 0 is pruned at the first report.
    study = _study(optuna.pruners.ThresholdPruner(upper=0.0))
    study.optimize(objective, n_trials=1)
    assert study.trials[0].state == optuna.trial.TrialState.PRUNED
    assert list(study.trials[0].intermediate_values) == [0]


def test_lightning_callback_without_the_packages_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna_integration", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"aimlutils\[lightning\]"):
        LightningPruningCallback(optuna.create_study().ask(), "val_loss")

"""report_and_prune: the report + prune step of a plain (PyTorch-style) training loop."""

from __future__ import annotations

import optuna
import pytest

from aimlutils.hyper_opt.utils import report_and_prune


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

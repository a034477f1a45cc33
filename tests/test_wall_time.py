"""Trials that fit the wall time: checkpoint times kept with each trial, no trial started that
could not reach a checkpoint before its job's end, and a trial stopped at a checkpoint after which
the next would not come in time."""

from __future__ import annotations

import datetime
import os
import time
import types
from collections.abc import Iterator
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from aimlutils.hyper_opt.api import open_study, read_config
from aimlutils.hyper_opt.config import ConfigError
from aimlutils.hyper_opt.coordination import wall_time
from aimlutils.hyper_opt.coordination.wall_time import CheckpointClock, checkpoint_times
from aimlutils.hyper_opt.objective.base import BaseObjective
from aimlutils.hyper_opt.stop import StopSignal, TrialInterrupted, stop_if_requested
from aimlutils.hyper_opt.worker import loop
from aimlutils.hyper_opt.worker.fit import JobEnd
from tests.conftest import MODEL, OBJECTIVE, hyper_config, needs_module


@pytest.fixture(autouse=True)
def no_stop_left() -> Iterator[None]:
    """A warning one test gives itself must not reach the next test's trials."""
    yield
    StopSignal.signum, StopSignal.reason = None, None


class FakeClock:
    """Both clocks the module reads, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


def test_the_clock_times_checkpoints_from_the_trials_start_and_warns_when_the_next_would_be_late(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(wall_time, "time", types.SimpleNamespace(monotonic=fake.monotonic, time=fake.time))
    clock = CheckpointClock()
    clock.start(job_end=fake.now + 100)
    for at in (10, 40, 70):  # epochs of 30 s: after 70, the next (70 + 33 + 5 s) is past 100
        fake.now = 1000.0 + at
        clock.saved()
        assert StopSignal.signum is None or at == 70
    assert StopSignal.signum is not None and "would come after the job's end in 30 s" in str(
        StopSignal.reason
    )
    with pytest.raises(TrialInterrupted, match="stopped at a checkpoint: the next checkpoint"):
        stop_if_requested()
    fake.now = 1075.0
    assert clock.fields("NVIDIA A100") == {
        "device": "NVIDIA A100",
        "ran_s": 75.0,
        "checkpoints": 3,
        "first_s": 10.0,
        "last_s": 70.0,
        "epoch_s": 30.0,
    }
    clock.stop()
    assert clock.fields("cpu") is None


def test_before_a_second_checkpoint_the_studys_epoch_stands_in_and_without_an_end_nothing_warns(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(wall_time, "time", types.SimpleNamespace(monotonic=fake.monotonic, time=fake.time))
    clock = CheckpointClock()
    clock.start(job_end=None, epoch_hint=500.0)
    fake.now += 10
    clock.saved()
    assert StopSignal.signum is None  # no job end: nothing to fit
    clock.start(job_end=fake.now + 100, epoch_hint=500.0)
    fake.now += 10
    clock.saved()
    assert StopSignal.signum is not None  # an epoch of 500 s does not fit in 90


def test_with_no_epoch_known_the_time_to_the_first_checkpoint_stands_in(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(wall_time, "time", types.SimpleNamespace(monotonic=fake.monotonic, time=fake.time))
    clock = CheckpointClock()
    clock.start(job_end=fake.now + 100)
    fake.now += 40
    clock.saved()  # 40 + 44 + 5 s < 100: on
    assert StopSignal.signum is None
    clock.start(job_end=fake.now + 100)
    fake.now += 50
    clock.saved()  # 50 + 55 + 5 s > 100: stop here
    assert StopSignal.signum is not None


def _timed(number: int, device: str, **timing: float) -> optuna.trial.FrozenTrial:
    trial = create_trial(value=1.0, user_attrs={"record": {"timing": {"device": device, **timing}}})
    trial.number = number
    return trial


def test_the_estimate_is_of_the_latest_trials_on_the_same_kind_of_gpu():
    trials = [_timed(n, "A100", first_s=100.0 + n, epoch_s=20.0) for n in range(25)]
    trials += [_timed(25, "A100"), _timed(26, "V100", first_s=900.0)]  # no checkpoint; another kind
    times = checkpoint_times(trials, "A100")
    assert times is not None and (times.first_s, times.epoch_s, times.trials) == (124.0, 20.0, 20)
    assert checkpoint_times(trials, "cpu") is None


def _study_with(tmp_path: Any, **optuna_section: Any) -> tuple[Any, optuna.Study]:
    (tmp_path / "objective.py").write_text(OBJECTIVE)
    hyper = hyper_config(tmp_path / "results", tmp_path / "objective.py", n_trials=3, **optuna_section)
    cfg = read_config(hyper, dict(MODEL), objective=_Checkpoints)
    return cfg, open_study(cfg, 1)


def _add_history(study: optuna.Study, first_s: float, epoch_s: float | None = None) -> None:
    timing = {"device": "cpu", "first_s": first_s, **({"epoch_s": epoch_s} if epoch_s else {})}
    study.add_trial(
        create_trial(
            value=1.0,
            params={"lr": 0.5},
            distributions={"lr": _LR},
            user_attrs={"record": {"timing": timing}},
        )
    )


_LR = optuna.distributions.FloatDistribution(0.0, 1.0)


def test_the_job_end_rule_asks_for_the_first_checkpoint_with_history_and_for_the_finish_without(tmp_path):
    _, study = _study_with(tmp_path)
    now = time.time()
    assert not JobEnd(study, "cpu", now + 40, fit=True).out_of_time()  # no history, no trial finished
    finished = JobEnd(study, "cpu", now + 40, fit=True)
    finished.durations.append(20.0)  # 20 * 1.1 + 30 s > 40 s
    assert finished.out_of_time()
    _add_history(study, first_s=45.0)
    assert JobEnd(study, "cpu", now + 40, fit=True).out_of_time()  # 45 s to a checkpoint: not in 40
    assert not JobEnd(study, "cpu", now + 60, fit=True).out_of_time()
    assert not JobEnd(study, "V100", now + 40, fit=True).out_of_time()  # no history on that kind
    assert not JobEnd(study, "cpu", now + 40, fit=False).out_of_time()  # as before: nothing finished
    assert not JobEnd(study, "cpu", None, fit=True).out_of_time()  # no job end


def _job_ends_in(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    end = datetime.datetime.now() + datetime.timedelta(seconds=seconds)
    monkeypatch.setenv("AIMLUTILS_JOB_END", end.isoformat(timespec="seconds"))


class _Checkpoints(BaseObjective):
    """Two epochs, a checkpoint after each, leaving when asked to."""

    def train(self, trial: optuna.trial.BaseTrial, conf: dict[str, Any]) -> dict[str, Any]:
        for epoch in range(2):
            trial.report(float(epoch), epoch)
            self.checkpoint_saved()
            if epoch + 1 < 2:
                self.stop_if_requested()
        return {"val_loss": conf["optimizer"]["learning_rate"]}


def test_each_trials_record_keeps_its_checkpoint_times_and_device(tmp_path):
    cfg, study = _study_with(tmp_path)
    assert loop.Worker(cfg, objective_class=_Checkpoints).run() == 3
    for trial in study.get_trials():
        timing = trial.user_attrs["record"]["timing"]
        assert timing["device"] == "cpu" and timing["checkpoints"] == 2, timing
        assert 0 <= timing["first_s"] <= timing["last_s"] <= timing["ran_s"], timing


def test_a_worker_starts_no_trial_that_would_not_reach_a_checkpoint_before_its_jobs_end(
    tmp_path, monkeypatch
):
    cfg, study = _study_with(tmp_path)
    _add_history(study, first_s=45.0)
    _job_ends_in(monkeypatch, 40)
    worker = loop.Worker(cfg, objective_class=_Checkpoints)
    assert worker.run() == 0 and worker.out_of_time
    (tmp_path / "off").mkdir()
    cfg_off, study_off = _study_with(tmp_path / "off", fit_wall_time=False)
    _add_history(study_off, first_s=45.0)
    assert loop.Worker(cfg_off, objective_class=_Checkpoints, max_trials=1).run() == 1  # as before


def test_a_trial_is_stopped_at_the_checkpoint_after_which_the_next_would_be_late(tmp_path, monkeypatch):
    cfg, study = _study_with(tmp_path)
    _add_history(study, first_s=0.5, epoch_s=500.0)  # a quick first checkpoint, then long epochs
    _job_ends_in(monkeypatch, 120)
    worker = loop.Worker(cfg, objective_class=_Checkpoints)
    with pytest.raises(TrialInterrupted):
        worker.run()
    (stopped,) = [t for t in study.get_trials() if t.state == TrialState.FAIL]
    record = stopped.user_attrs["record"]
    assert (
        stopped.state == TrialState.FAIL
        and "stopped at a checkpoint: the next checkpoint" in record["fail_reason"]
    )
    assert record["timing"]["checkpoints"] == 1
    assert any(t.user_attrs.get("retry_of") == stopped.number for t in study.get_trials())  # continued later
    assert worker.progressed  # its job goes back in the queue


def test_torch_checkpoints_are_timed(tmp_path):
    needs_module("torch")
    import torch

    from aimlutils.hyper_opt.utils import TorchCheckpoint

    clock = wall_time.CLOCK
    clock.start()
    model = torch.nn.Linear(2, 1)
    checkpoint = TorchCheckpoint(tmp_path, model)
    checkpoint.save(0)
    checkpoint.save(1)
    assert clock.fields("cpu")["checkpoints"] == 2  # type: ignore[index]
    clock.stop()


@pytest.mark.parametrize("value", ["sometimes", 3])
def test_fit_wall_time_is_true_or_false(tmp_path, value):
    (tmp_path / "objective.py").write_text(OBJECTIVE)
    hyper = hyper_config(tmp_path / "results", tmp_path / "objective.py", fit_wall_time=value)
    with pytest.raises(ConfigError, match=r"optuna\.fit_wall_time"):
        read_config(hyper, dict(MODEL))


def test_the_kind_of_gpu_is_the_name_nvidia_smi_gives_else_cpu(tmp_path, monkeypatch):
    from aimlutils.hyper_opt.worker.setup import device_kind

    fake = tmp_path / "nvidia-smi"  # two kinds on the node: the one of this worker's first GPU
    fake.write_text('#!/bin/sh\ncase "$*" in *"-i 1"*) echo "NVIDIA H100 80GB HBM3";;\n'
                    '*) printf "NVIDIA A100-SXM4-40GB\\nNVIDIA H100 80GB HBM3\\n";; esac\n')  # fmt: skip
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert device_kind(True, {"CUDA_VISIBLE_DEVICES": "1,2"}) == "NVIDIA H100 80GB HBM3"
    assert device_kind(False, {"CUDA_VISIBLE_DEVICES": "1"}) == "cpu"  # optuna.gpu: false
    fake.write_text("#!/bin/sh\nexit 9\n")  # no driver
    assert device_kind(True, {"CUDA_VISIBLE_DEVICES": "0"}) == "cpu"

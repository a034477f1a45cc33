"""Trials that continue where they stopped: checkpoints, one learning curve, the stop warning."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from aimlutils.hyper_opt.base_objective import BaseObjective
from aimlutils.hyper_opt.config import load_config
from aimlutils.hyper_opt.coordination import FileLock, continue_trial, inherited_values, requeue, trial_row
from aimlutils.hyper_opt.coordination import study as study_lib
from aimlutils.hyper_opt.launchers import batch_launcher
from aimlutils.hyper_opt.paths import StudyPaths
from aimlutils.hyper_opt.stop import LEFT_FOR_LATER_EXIT_CODE, StopSignal, TrialInterrupted, stop_if_requested
from aimlutils.hyper_opt.storage import open_storage
from aimlutils.hyper_opt.storage.journal import JournalAppendLock
from aimlutils.hyper_opt.worker import Worker, arm_stop_warning, left_code
from tests.conftest import MODEL, ROOT, hyper_config, needs_module
from tests.test_local_run import load_study, start_optimize
from tests.test_signals import wait_for, worker_pids


@pytest.fixture(autouse=True)
def no_stop_request() -> Iterator[None]:
    """Each test starts, and leaves, with no stop requested in this process."""
    StopSignal.signum, StopSignal.interruptible = None, False
    yield
    StopSignal.signum, StopSignal.interruptible = None, False


# The stop signals as a worker handles them.


def test_the_warning_signal_does_not_interrupt_training_but_a_later_sigterm_does():
    with StopSignal.interruptible_section():
        StopSignal.handler(signal.SIGUSR1, None)  # the job's time limit is near
        assert StopSignal.signum == signal.SIGUSR1
        with pytest.raises(TrialInterrupted, match="SIGUSR1"):
            stop_if_requested()
        with pytest.raises(KeyboardInterrupt):
            StopSignal.handler(signal.SIGTERM, None)  # the limit itself
    assert StopSignal.signum == signal.SIGTERM
    StopSignal.handler(signal.SIGINT, None)  # ignored while the worker cleans up
    assert StopSignal.signum == signal.SIGTERM


def test_a_stop_during_a_journal_append_interrupts_once_the_lock_is_let_go(tmp_path):
    journal = str(tmp_path / "study.journal")
    lock = JournalAppendLock(journal)
    with pytest.raises(KeyboardInterrupt), StopSignal.interruptible_section():
        lock.acquire()
        StopSignal.handler(signal.SIGTERM, None)  # scancel, while the append holds the lock
        assert StopSignal.signum == signal.SIGTERM  # noted, not raised inside the lock
        lock.release()  # raises here, the lock let go
        pytest.fail("the stop was never raised")
    # Let go for this process's next append too (the worker's own clean-up writes the trial's end).
    other = FileLock(tmp_path / "study.journal.lockf")
    assert other.acquire(blocking=False)
    other.release()


def test_a_worker_arms_its_own_warning_where_the_scheduler_sends_none():
    end = time.time() + 600
    env = {"AIMLUTILS_JOB_END": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(end))}
    assert arm_stop_warning(env) is None  # no warning asked for
    timer = arm_stop_warning({**env, "AIMLUTILS_STOP_WARNING_S": "120"})
    assert timer is not None
    timer.cancel()
    assert 470 < timer.interval <= 480


# Chains of trials: the same checkpoint directory, one learning curve, retries that count only
# when a trial made no progress.


def _interrupted(study: optuna.Study, steps: range) -> optuna.Trial:
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    for step in steps:
        trial.report(float(step), step)
    return trial


def test_a_chain_of_continued_trials_shares_one_directory_and_one_curve(tmp_path):
    study = optuna.create_study()
    objective = BaseObjective()
    objective.study_paths = StudyPaths(tmp_path)
    first = _interrupted(study, range(3))
    assert objective.checkpoint_dir(first) == tmp_path / "checkpoints" / "trial_0"
    assert requeue(study, first, max_retries=1)
    study.tell(first, state=TrialState.FAIL)

    second = study.ask()  # runs the queued parameters
    second.suggest_float("x", 0, 1)
    assert second.params == first.params
    assert second.user_attrs == {"retry_of": 0, "retries": 0}  # progress: the retry is not counted
    assert continue_trial(study, second) == 3
    for step in (2, 3, 4):  # step 2 again: the epoch after the last checkpoint
        second.report(10.0 + step, step)
    assert objective.checkpoint_dir(second) == tmp_path / "checkpoints" / "trial_0"
    assert requeue(study, second, max_retries=1)
    study.tell(second, state=TrialState.FAIL)

    third = study.ask()
    third.suggest_float("x", 0, 1)
    assert third.user_attrs == {"retry_of": 1, "retries": 0, "origin_trial": 0}
    assert objective.checkpoint_dir(third) == tmp_path / "checkpoints" / "trial_0"
    assert objective.continues(third) == 1
    assert inherited_values(study, third) == {0: 0.0, 1: 1.0, 2: 2.0, 3: 13.0, 4: 14.0}
    continue_trial(study, third)
    study.tell(third, 0.5)
    assert study.trials[2].intermediate_values == {0: 0.0, 1: 1.0, 2: 2.0, 3: 13.0, 4: 14.0}
    assert trial_row(study.trials[2])["continues"] == 1
    assert trial_row(study.trials[0])["continues"] is None


def test_a_trial_that_makes_no_progress_uses_up_its_retries():
    study = optuna.create_study()
    first = _interrupted(study, range(2))
    assert requeue(study, first, max_retries=1)
    study.tell(first, state=TrialState.FAIL)
    second = study.ask()
    second.suggest_float("x", 0, 1)
    continue_trial(study, second)  # dies again before reporting anything new
    assert requeue(study, second, max_retries=1)
    study.tell(second, state=TrialState.FAIL)
    third = study.ask()
    third.suggest_float("x", 0, 1)
    assert third.user_attrs["retries"] == 1
    continue_trial(study, third)
    assert not requeue(study, third, max_retries=1)
    assert not requeue(study, _interrupted(study, range(5)), max_retries=0)  # 0: never


# The checkpoint helpers.


def _torch_setup(seed: int = 0) -> tuple[Any, Any, Any, Any]:
    import torch

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    x = torch.randn(64, 4)
    return torch, model, optimizer, (x, x.sum(1, keepdim=True))


def _torch_epoch(torch: Any, model: Any, optimizer: Any, data: Any) -> float:
    x, y = data
    for idx in torch.randperm(len(x)).split(16):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
        loss.backward()
        optimizer.step()
    return float(loss)


def test_a_restored_torch_checkpoint_trains_on_as_if_never_stopped(tmp_path):
    needs_module("torch")
    from aimlutils.hyper_opt.utils import TorchCheckpoint

    torch, model, optimizer, data = _torch_setup()
    straight = [_torch_epoch(torch, model, optimizer, data) for _ in range(4)]

    torch, model, optimizer, data = _torch_setup()
    checkpoint = TorchCheckpoint(tmp_path, model, optimizer)
    assert (checkpoint.epoch, checkpoint.restored) == (0, False)
    for epoch in range(2):
        loss = _torch_epoch(torch, model, optimizer, data)
        checkpoint.save(epoch, loss=loss)
    torch.manual_seed(123)  # the interrupted process's random state is gone with it

    torch, model, optimizer, data = _torch_setup(seed=7)  # a new process builds all anew
    data = _torch_setup()[3]
    checkpoint = TorchCheckpoint(tmp_path, model, optimizer)
    assert (checkpoint.epoch, checkpoint.restored, checkpoint.extra) == (2, True, {"loss": straight[1]})
    resumed = [_torch_epoch(torch, model, optimizer, data) for _ in range(2)]
    assert resumed == straight[2:]
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


@pytest.fixture
def keras() -> Any:
    needs_module("tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


def _keras_model(keras: Any) -> Any:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(8), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


def test_a_keras_checkpoint_restores_weights_optimizer_and_epoch_and_leaves_on_request(keras, tmp_path):
    import numpy as np

    from aimlutils.hyper_opt.utils import KerasCheckpoint

    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = x.sum(1)
    model = _keras_model(keras)
    checkpoint = KerasCheckpoint(tmp_path)
    assert checkpoint.restore(model) == 0
    model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[checkpoint])
    assert [p.name for p in tmp_path.iterdir()] == ["epoch-00002.weights.h5"]  # older ones removed

    again = _keras_model(keras)
    assert KerasCheckpoint(tmp_path).restore(again) == 3
    assert int(again.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy()) == 12
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), again.get_weights(), strict=True))

    StopSignal.signum = signal.SIGUSR1  # as the warning before a job's time limit sets it
    with pytest.raises(TrialInterrupted):
        again.fit(
            x, y, epochs=10, initial_epoch=3, batch_size=16, verbose=0, callbacks=[KerasCheckpoint(tmp_path)]
        )
    assert [p.name for p in tmp_path.iterdir()] == ["epoch-00003.weights.h5"]  # saved, then left
    # After the last epoch the trial is done: saved, and no stop that would need a run to finish it.
    again.fit(
        x, y, epochs=5, initial_epoch=4, batch_size=16, verbose=0, callbacks=[KerasCheckpoint(tmp_path)]
    )
    assert [p.name for p in tmp_path.iterdir()] == ["epoch-00004.weights.h5"]


# A command objective: {checkpoint}, and the warning passed on to the command.

# Saves its "epoch" in {checkpoint}; on SIGUSR1 it saves and exits 3, as a command should.
COMMAND = textwrap.dedent(
    """\
    #!/bin/bash
    dir="$1"
    [[ "$dir" == "$AIMLUTILS_CHECKPOINT_DIR" ]] || exit 9
    epoch=$(cat "$dir/epoch" 2>/dev/null || echo 0)
    echo "started at $epoch" >> "$dir/runs"
    trap 'echo $epoch > "$dir/epoch"; exit 3' USR1
    while ((epoch < 4)); do
        echo "{\\"step\\": $epoch, \\"val_loss\\": $epoch}"
        epoch=$((epoch + 1))
        echo $epoch > "$dir/epoch"
        if [[ -e "$dir/hold" ]]; then sleep 30 & wait; fi
    done
    echo '{"val_loss": 0.5}'
    """
)


def test_a_command_is_told_to_stop_and_its_trial_continues_from_its_checkpoint(tmp_path):
    script = tmp_path / "train.sh"
    script.write_text(COMMAND)
    script.chmod(0o755)
    data = hyper_config(tmp_path / "results", script, n_trials=1)
    data["optuna"]["objective"] = {"command": f"{script} {{checkpoint}} {{parameters}}"}
    hyper, model = tmp_path / "hyper.yml", tmp_path / "model.yml"
    hyper.write_text(yaml.safe_dump(data))
    model.write_text(yaml.safe_dump(MODEL))
    cfg = load_config(hyper, model, base_dir=tmp_path)
    study_lib.create_or_load(cfg, open_storage(cfg.storage), 1)
    folder = cfg.paths.checkpoint(0)
    folder.mkdir(parents=True)
    (folder / "hold").touch()  # the command waits after its first epoch

    def warn_once_held() -> None:
        wait_for(lambda: (folder / "epoch").exists(), 60)
        StopSignal.handler(signal.SIGUSR1, None)

    threading.Thread(target=warn_once_held, daemon=True).start()
    with pytest.raises(TrialInterrupted, match="after the stop request"):
        Worker(cfg).run()
    StopSignal.signum = None
    (folder / "hold").unlink()
    assert Worker(cfg).run() == 1

    study = load_study(hyper, model)
    first, second = study.trials
    assert first.state == TrialState.FAIL and first.user_attrs["record"]["fail_reason"].startswith(
        "interrupted"
    )
    assert second.state == TrialState.COMPLETE and second.user_attrs["retry_of"] == 0
    assert (folder / "runs").read_text().split("\n")[:-1] == ["started at 0", "started at 1"]
    assert second.intermediate_values == {0: 0.0, 1: 1.0, 2: 2.0, 3: 3.0}


# Job scripts: the warning is asked for, and passed on to every worker.


SLURM = {"jobs": 1, "gpus_per_node": 2, "batch": {"gres": "gpu:2", "t": "10"}}


def test_the_job_asks_for_a_warning_before_its_time_limit(study_files):
    hyper, model = study_files(gpu=True, sections={"slurm": SLURM})
    launcher = batch_launcher(load_config(hyper, model))
    assert launcher is not None
    assert "#SBATCH --signal=B:USR1@120" in launcher.plan(2).text
    hyper, model = study_files(gpu=True, sections={"slurm": {**SLURM, "stop_warning_s": 0}})
    launcher = batch_launcher(load_config(hyper, model))
    assert launcher is not None and "--signal" not in launcher.plan(2).text
    # 120 s would come at the start of a 3-minute job: a quarter of its limit instead.
    short = {**SLURM, "batch": {**SLURM["batch"], "t": "3"}}
    hyper, model = study_files(gpu=True, sections={"slurm": short})
    launcher = batch_launcher(load_config(hyper, model))
    assert launcher is not None and "#SBATCH --signal=B:USR1@45\n" in launcher.plan(2).text
    theirs = {**SLURM, "batch": {**SLURM["batch"], "signal": "B:USR2@300"}}
    hyper, model = study_files(gpu=True, sections={"slurm": theirs})
    launcher = batch_launcher(load_config(hyper, model))
    assert launcher is not None and launcher.plan(2).text.count("--signal") == 1  # theirs


def _fake_job(
    study_files: Any, tmp_path: Path, tools: dict[str, str], job_id: str
) -> subprocess.Popen[bytes]:
    """The job script of a Slurm study of 2 workers, started as job ``job_id`` with
    ``fake-python`` and the other ``tools`` (name: text) of ``tmp_path/bin`` found first."""
    hyper, model = study_files(gpu=True, sections={"slurm": SLURM})
    launcher = batch_launcher(load_config(hyper, model))
    assert launcher is not None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in tools.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    script = tmp_path / "job.sh"
    script.write_text(launcher.plan(2).text.replace(sys.executable, str(bin_dir / "fake-python")))
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SLURM_JOB_ID": job_id}
    return subprocess.Popen(["bash", str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


# Stands in for a worker: writes down each signal it gets, exits 0 on SIGTERM.
FAKE_WORKER = textwrap.dedent(
    """\
    #!/bin/bash
    while (($#)); do [[ $1 == --index ]] && index=$2; shift; done
    trap 'echo USR1 >> {out}/$index' USR1
    trap 'echo TERM >> {out}/$index; exit 0' TERM
    echo started > {out}/$index
    while true; do sleep 0.1; done
    """
)


def test_the_job_script_passes_the_warning_then_the_stop_to_its_workers_and_waits(study_files, tmp_path):
    out = tmp_path / "seen"
    out.mkdir()
    tools = {"fake-python": FAKE_WORKER.format(out=out), "squeue": "#!/bin/sh\nexit 1\n"}
    job = _fake_job(study_files, tmp_path, tools, job_id="1")
    seen = [out / "0", out / "1"]
    try:
        assert wait_for(lambda: all(p.exists() for p in seen), 30)
        job.send_signal(signal.SIGUSR1)
        assert wait_for(lambda: all(p.read_text().split() == ["started", "USR1"] for p in seen), 30)
        assert job.poll() is None  # still waiting for its workers
        job.send_signal(signal.SIGTERM)
        job.wait(timeout=30)
    finally:
        if job.poll() is None:
            job.kill()
    assert [p.read_text().split() for p in seen] == [["started", "USR1", "TERM"]] * 2
    assert job.returncode == 0


# Stands in for a worker that leaves on the warning or SIGTERM with exit code {code}.
LEAVING_WORKER = textwrap.dedent(
    """\
    #!/bin/bash
    while (($#)); do [[ $1 == --index ]] && index=$2; shift; done
    trap 'exit {code}' USR1 TERM
    echo started > {out}/$index
    while true; do sleep 0.1; done
    """
)


@pytest.mark.parametrize(
    ("signum", "reason", "code", "requeued"),
    [
        (signal.SIGUSR1, "None", 99, True),  # left at the warning with trials to run
        (signal.SIGUSR1, "None", 0, False),  # the study is done
        (signal.SIGTERM, "None", 99, False),  # cancelled or preempted: never undone
        (signal.SIGTERM, "TimeLimit", 99, True),  # the limit came before the warning did its work
    ],
)
def test_a_job_whose_time_is_up_with_trials_left_puts_itself_back_in_the_queue(
    study_files, tmp_path, signum, reason, code, requeued
):
    out = tmp_path / "seen"
    out.mkdir()
    tools = {
        "fake-python": LEAVING_WORKER.format(code=code, out=out),
        "squeue": f'#!/bin/bash\n[[ "$*" == *%r* ]] && echo {reason} || exit 1\n',
        "scontrol": f'#!/bin/bash\necho "$@" >> {out}/scontrol\n',
    }
    job = _fake_job(study_files, tmp_path, tools, job_id="7")
    try:
        assert wait_for(lambda: (out / "0").exists() and (out / "1").exists(), 30)
        job.send_signal(signum)
        job.wait(timeout=30)
    finally:
        if job.poll() is None:
            job.kill()
    calls = (out / "scontrol").read_text().splitlines() if (out / "scontrol").exists() else []
    assert calls == (["requeue 7"] if requeued else []), job.communicate()


def test_a_worker_asks_for_its_job_to_run_again_only_in_a_job_and_after_progress(study_files):
    hyper, model = study_files(n_trials=1)
    cfg = load_config(hyper, model)
    study_lib.create_or_load(cfg, open_storage(cfg.storage), 1)
    worker = Worker(cfg)
    assert left_code(None) == left_code(worker) == 0  # no progress yet
    worker.progressed = True
    assert left_code(worker) == 0  # a local run: nothing to requeue
    worker.identity["job_id"] = "12_3"
    assert left_code(worker) == LEFT_FOR_LATER_EXIT_CODE
    worker.study.optimize(lambda trial: 1.0, n_trials=1)  # the study's last trial
    assert left_code(worker) == 0  # done: a run more would find nothing to do


# The examples: Ctrl-C, then --reload, and the stopped trial goes on from its last epoch.

# An example's own objective, but a trial that reports epoch {hold_at} waits right there (reported,
# not yet saved) until the file `release` appears, saying so with `<trial number>.json` in {folder}
# (as tests/conftest.py's Held reads it): Ctrl-C comes mid-trial at an epoch the test knows,
# however fast or slowly the machine trains.
HELD_EXAMPLE = textwrap.dedent(
    """\
    import importlib.util, json, os, time

    _spec = importlib.util.spec_from_file_location("example_objective", {example!r})
    example = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(example)


    def custom_updates(trial, conf):
        return example.custom_updates(trial, conf)


    class HeldTrial:
        def __init__(self, trial):
            self._trial = trial

        def __getattr__(self, name):
            return getattr(self._trial, name)

        def report(self, value, step):
            self._trial.report(value, step)
            if step == {hold_at}:
                marker = os.path.join({folder!r}, f"{{self._trial.number}}.json")
                with open(marker + ".tmp", "w") as fh:
                    json.dump({{"trial": self._trial.number}}, fh)
                os.replace(marker + ".tmp", marker)
                while not os.path.exists(os.path.join({folder!r}, "release")):
                    time.sleep(0.05)


    class Objective(example.Objective):
        def train(self, trial, conf):
            return super().train(HeldTrial(trial), conf)
    """
)


@pytest.mark.parametrize(("example", "module"), [("torch", "torch"), ("keras", "tensorflow")])
def test_an_example_stopped_by_ctrl_c_continues_from_its_last_epoch(tmp_path, held, example, module):
    needs_module(module)
    epochs, hold_at = 6, 2
    objective = tmp_path / "objective.py"
    source = ROOT / f"examples/{example}/objective.py"
    objective.write_text(HELD_EXAMPLE.format(example=str(source), hold_at=hold_at, folder=str(held.folder)))
    hyper_data = yaml.safe_load((ROOT / f"examples/{example}/hyper.yml").read_text())
    optuna_section = hyper_data["optuna"]
    optuna_section.update(n_trials=2, save_path=str(tmp_path / "results"), pruner={"type": "NopPruner"})
    optuna_section["objective"] = str(objective)
    hyper_data["log"]["save_path"] = str(tmp_path / "results/log.txt")
    model_data = yaml.safe_load((ROOT / f"examples/{example}/model.yml").read_text())
    model_data["trainer"]["epochs"] = epochs
    hyper, model = tmp_path / "hyper.yml", tmp_path / "model.yml"
    hyper.write_text(yaml.safe_dump(hyper_data, sort_keys=False))
    model.write_text(yaml.safe_dump(model_data, sort_keys=False))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}

    proc = start_optimize(hyper, model, "--workers", "1")
    try:
        held.wait(1, timeout=300)  # a guard: the worker imports its framework first
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    cfg = load_config(hyper, model, base_dir=tmp_path)
    assert wait_for(lambda: not worker_pids(cfg.save_path), 60)
    (stopped,) = load_study(hyper, model).get_trials(states=(TrialState.FAIL,))
    reached = max(stopped.intermediate_values)
    assert reached == hold_at
    held.release()  # the trials of the next run train through

    again = subprocess.run(
        [sys.executable, str(ROOT / "optimize.py"), str(hyper), str(model), "--reload", "--workers", "1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    study = load_study(hyper, model)
    (continued,) = [t for t in study.trials if t.user_attrs.get("retry_of") == stopped.number]
    assert continued.state == TrialState.COMPLETE and continued.params == stopped.params
    results = continued.user_attrs["record"]["results"]
    # It started at the epoch after its last checkpoint: the one it had reported but not saved.
    assert results["first_epoch"] == reached
    assert sorted(continued.intermediate_values) == list(range(epochs))  # one curve, no gap
    assert continued.intermediate_values[0] == stopped.intermediate_values[0]
    log = (cfg.paths.worker_log(0)).read_text()
    assert (
        f"trial {continued.number} continues trial {stopped.number} at epoch {results['first_epoch']}" in log
    )

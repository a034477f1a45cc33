"""Tune any command: an objective that runs a program per trial instead of importing Python.

In ``hyper.yml``::

    optuna:
      objective:
        command: "python train.py --epochs=10 {parameters}"
        pass-as: {lr: "--learning-rate={v}"}   # per parameter; default "--{name}={v}"

The command is split like a shell would (``shlex``) but run without one, so values never need
quoting; a pipe or redirection belongs in a script. Placeholders, each inside one word:

- ``{parameters}``: a word of its own, replaced by one argument per parameter (``pass-as``);
- ``{<parameter name>}``: that parameter's value, e.g. ``--lr={lr}``;
- ``{config}``: the trial's model config file; ``{trial}``: the trial number;
- ``{gpus}``: how many GPUs the trial has (``gpus_per_trial``; 0 on CPU), for
  ``torchrun --standalone --nproc_per_node={gpus} train.py {parameters}``;
- ``{checkpoint}``: the trial's checkpoint directory, shared with the trials that continue it;
- ``{{`` and ``}}``: literal braces.

Each trial runs in ``save_path/trials/<number>/``, which holds ``model.yml`` (the model config with
the trial's values applied) and the command's ``stdout.txt`` and ``stderr.txt``. The environment
adds ``AIMLUTILS_MODEL_CONFIG``, ``AIMLUTILS_TRIAL_NUMBER``, ``AIMLUTILS_TRIAL_DIR``,
``AIMLUTILS_GPUS`` and ``AIMLUTILS_CHECKPOINT_DIR``.

The warning before a job's time limit (SIGUSR1) is passed on to the command's process group; a
command that then exits with an error was interrupted, not wrong: its trial is continued later.

A JSON object printed on a line of its own with a ``step`` and the metric
(``{"step": 3, "val_loss": 0.41}``) is reported to the pruner; a pruned trial's command is stopped
with its whole process group, and so is the command of a worker that dies mid-trial (a watchdog
process per command, :class:`~aimlutils.hyper_opt.lifeline.GroupGuard`, sees to that). The
results are ``metrics.json`` when the command writes one in its directory, else the last JSON
object it printed. A non-zero exit fails the trial with the end of its stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shlex
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import optuna
import yaml

from aimlutils.hyper_opt._text import tail
from aimlutils.hyper_opt.config.command import CommandSpec
from aimlutils.hyper_opt.errors import HyperOptError
from aimlutils.hyper_opt.lifeline import GroupGuard, stop_group
from aimlutils.hyper_opt.objective.base import BaseObjective, TrialResultError
from aimlutils.hyper_opt.paths import StudyPaths
from aimlutils.hyper_opt.stop import WARNING_SIGNAL, TrialInterrupted, stop_requested

#: How many lines of stderr a failed trial's ``fail_reason`` keeps.
STDERR_TAIL_LINES = 20
#: Seconds a stopped command gets to exit after SIGTERM before its group is sent SIGKILL.
KILL_GRACE_S = 5.0


class CommandFailed(HyperOptError, RuntimeError):
    """The trial's command exited with an error; the message ends with its stderr's last lines."""


class CommandObjective(BaseObjective):
    """Runs ``spec``'s command for each trial in ``save_path/trials/<number>/``.

    Example::

        objective = CommandObjective(spec, Path("results"), config=model)
        study.optimize(objective, n_trials=10)
    """

    def __init__(
        self,
        spec: CommandSpec,
        save_path: Path,
        study: Any = None,
        config: Mapping[str, Any] | None = None,
        metric: str | list[str] = "val_loss",
        device: str = "cpu",
    ) -> None:
        BaseObjective.__init__(self, study, config, metric, device)
        self.spec = spec
        self.paths = StudyPaths(save_path)

    def train(self, trial: optuna.trial.BaseTrial, conf: dict[str, Any]) -> Mapping[str, Any]:
        folder = self.paths.trials / str(trial.number)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metrics.json").unlink(missing_ok=True)  # left by an earlier run of this number
        config_path = folder / "model.yml"
        config_path.write_text(yaml.safe_dump(conf, sort_keys=False), encoding="utf-8")
        values = {
            p.name: trial.params[p.name] for p in self.search_space.parameters if p.name in trial.params
        }
        checkpoint = self.checkpoint_dir(trial)
        argv = self.spec.argv(values, str(config_path), trial.number, self.gpus, str(checkpoint))
        env = dict(
            os.environ,
            AIMLUTILS_MODEL_CONFIG=str(config_path),
            AIMLUTILS_TRIAL_NUMBER=str(trial.number),
            AIMLUTILS_TRIAL_DIR=str(folder),
            AIMLUTILS_GPUS=str(self.gpus),
            AIMLUTILS_CHECKPOINT_DIR=str(checkpoint),
        )
        last = _run(argv, folder, env, trial, self.metrics)
        metrics_file = folder / "metrics.json"
        if metrics_file.exists():
            try:
                last = json.loads(metrics_file.read_text(encoding="utf-8"))
            except ValueError as err:
                raise TrialResultError(f"{metrics_file} is not JSON: {err}") from None
        if last is None:
            raise TrialResultError(
                f"the command printed no JSON object and wrote no metrics.json; print e.g. "
                f'{{"{self.metrics[0]}": 0.25}} as its last JSON line (output in {folder})'
            )
        return last


def _run(
    argv: list[str], folder: Path, env: dict[str, str], trial: optuna.trial.BaseTrial, metrics: list[str]
) -> dict[str, Any] | None:
    """Run the command, report its intermediate values; returns the last JSON object it printed."""
    with (
        open(folder / "stdout.txt", "w", encoding="utf-8") as out,
        open(folder / "stderr.txt", "w", encoding="utf-8") as err,
    ):
        # Stops the command's group should this worker die without doing it (kill -9, OOM).
        guard = GroupGuard(KILL_GRACE_S)
        try:
            # A session of its own, so a pruned trial's command is stopped with all its children.
            proc = subprocess.Popen(
                argv,
                cwd=folder,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                bufsize=1,
                start_new_session=True,
            )
        except OSError as error:
            guard.release()
            raise CommandFailed(f"cannot start {argv[0]!r}: {error}") from None
        guard.watch(proc.pid)
        lines: queue.Queue[str | None] = queue.Queue()
        reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True)
        reader.start()
        last: dict[str, Any] | None = None
        warned = False
        try:
            while True:
                if not warned and stop_requested():
                    # The job's time limit is near (or a stop came): the command may save and leave.
                    warned = True
                    with contextlib.suppress(OSError):
                        os.killpg(proc.pid, WARNING_SIGNAL)
                try:
                    line = lines.get(timeout=0.1)
                except queue.Empty:
                    if proc.poll() is not None:
                        # The command is done; a child it left behind may hold stdout open.
                        _stop(proc)
                    continue
                if line is None:
                    break
                out.write(line)
                out.flush()
                obj = _json_object(line)
                if obj is not None:
                    last = obj
                    _report(trial, obj, metrics, proc)
            code = proc.wait()
        finally:
            _stop(proc)
            guard.release()
            reader.join(timeout=KILL_GRACE_S)
    if code != 0:
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        if warned:
            raise TrialInterrupted(f"the command {how} after the stop request")
        raise CommandFailed(f"{shlex.join(argv)} {how}; stderr ends:\n{_stderr_tail(folder)}")
    return last


def _read_lines(stream: IO[str] | None, lines: queue.Queue[str | None]) -> None:
    if stream is not None:
        for line in stream:
            lines.put(line)
        stream.close()
    lines.put(None)


def _json_object(line: str) -> dict[str, Any] | None:
    text = line.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def _report(
    trial: optuna.trial.BaseTrial, obj: Mapping[str, Any], metrics: list[str], proc: subprocess.Popen[str]
) -> None:
    # Optuna prunes single-objective studies only; the values of several metrics are not reported.
    step, value = obj.get("step"), obj.get(metrics[0])
    if len(metrics) != 1 or not isinstance(step, int) or isinstance(step, bool):
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    trial.report(float(value), step)
    if trial.should_prune():
        _stop(proc)
        raise optuna.TrialPruned(f"pruned at step {step} ({metrics[0]}={value})")


def _stop(proc: subprocess.Popen[str]) -> None:
    """Stop the command's whole process group: SIGTERM, then SIGKILL after a grace period."""
    stop_group(proc.pid, KILL_GRACE_S, reap=proc.poll)


def _stderr_tail(folder: Path) -> str:
    return tail(folder / "stderr.txt", STDERR_TAIL_LINES, "(no stderr)", "(stderr is empty)")

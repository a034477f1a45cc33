"""The Python API: run a study from a notebook or a script, or submit its workers with submitit.

Example, from a notebook::

    from aimlutils.hyper_opt import BaseObjective, optimize

    class Objective(BaseObjective):
        def train(self, trial, conf):
            return {"val_loss": (conf["optimizer"]["learning_rate"] - 0.01) ** 2}

    study = optimize("hyper.yml", "model.yml", objective=Objective)
    study.best_params

and on a cluster, one SLURM array of 8 workers::

    import submitit
    executor = submitit.AutoExecutor(folder="logs")
    executor.update_parameters(slurm_partition="gpu", gpus_per_node=1, timeout_min=600)
    jobs = submit("hyper.yml", "model.yml", executor, workers=8, objective=Objective)
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from aimlutils.hyper_opt.config import RunConfig, check_config, load_config
from aimlutils.hyper_opt.coordination import recover_study
from aimlutils.hyper_opt.coordination import study as study_lib
from aimlutils.hyper_opt.launchers import LocalLauncher, save_run_configs
from aimlutils.hyper_opt.objective.base import BaseObjective
from aimlutils.hyper_opt.paths import keep_private
from aimlutils.hyper_opt.storage import open_for_command

if TYPE_CHECKING:
    import submitit

ConfigSource = str | os.PathLike[str] | Mapping[str, Any]


def read_config(
    hyper: ConfigSource,
    model: ConfigSource | None = None,
    objective: type[BaseObjective] | None = None,
    overrides: Sequence[str] = (),
    base_dir: str | os.PathLike[str] | None = None,
) -> RunConfig:
    """The checked config of a study, from files or from dicts (``ConfigError`` lists every problem).

    With dicts, relative paths are taken from ``base_dir`` (default: the current directory).
    """
    base = Path(base_dir or Path.cwd())
    if isinstance(hyper, Mapping):
        if overrides:
            raise ValueError("overrides apply to config files; change the dicts instead")
        model_data = dict(model) if isinstance(model, Mapping) else {}
        if model is not None and not isinstance(model, Mapping):
            from aimlutils.hyper_opt.config import read_yaml

            model_data = read_yaml(model, "model.yml")
        return check_config(_plain(hyper), model_data, base, base, objective is not None)
    if isinstance(model, Mapping):
        raise TypeError("give hyper and model both as files or both as dicts")
    return load_config(hyper, model, base, overrides, objective_given=objective is not None)


def _plain(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _plain(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def open_study(cfg: RunConfig, n_workers: int) -> optuna.Study:
    """Create or reload the study of ``cfg`` (as ``optimize.py`` does before its workers start) and
    fail the trials that lost their workers before."""
    keep_private(cfg.save_path, cfg.optuna.readable_by)
    storage = open_for_command(cfg.storage, cfg.optuna.storage_wait_s)
    study, reloaded = study_lib.create_or_load(cfg, storage, n_workers)
    if reloaded:
        recover_study(study, storage, cfg.paths, None, cfg.optuna.max_retries)
    return study


def optimize(
    hyper: ConfigSource,
    model: ConfigSource | None = None,
    objective: type[BaseObjective] | None = None,
    *,
    workers: int = 1,
    overrides: Sequence[str] = (),
    reload: bool | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> optuna.Study:
    """Run a study on this machine until its ``n_trials`` are done; returns the study.

    ``objective``: an Objective class to use instead of ``optuna.objective``. With it, one
    worker runs in this process (``workers=1``, the notebook case) or ``workers`` run as local
    processes through submitit's ``LocalExecutor``. Without it, the workers are the same local
    processes ``optimize.py`` starts.
    """
    cfg = read_config(hyper, model, objective, overrides, base_dir)
    if reload is not None:
        cfg = cfg.with_optuna(reload=reload)
    open_study(cfg, workers)
    if objective is None:
        LocalLauncher(cfg).launch(workers)
    elif workers == 1:
        _run_here(cfg, objective)
    else:
        import submitit

        executor = submitit.LocalExecutor(folder=cfg.save_path / "submitit")
        for job in _submit_workers(cfg, executor, workers, objective):
            job.result()
    return study_lib.load(cfg, open_for_command(cfg.storage, cfg.optuna.storage_wait_s), workers)


def submit(
    hyper: ConfigSource,
    model: ConfigSource | None,
    executor: submitit.Executor,
    *,
    workers: int,
    objective: type[BaseObjective] | None = None,
    overrides: Sequence[str] = (),
    reload: bool | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> list[submitit.Job[int]]:
    """Create (or reload) the study, then submit ``workers`` workers with a submitit executor.

    ``AutoExecutor`` on SLURM submits one job array; ``LocalExecutor`` runs local processes.
    ``DebugExecutor`` gets one job that runs one trial in this process when its ``result()`` is
    asked for, and opens the debugger on the objective's exception. Returns the jobs; each
    job's result is the number of trials its worker ran.
    """
    import submitit

    cfg = read_config(hyper, model, objective, overrides, base_dir)
    if reload is not None:
        cfg = cfg.with_optuna(reload=reload)
    open_study(cfg, workers)
    if isinstance(executor, submitit.DebugExecutor):
        command = save_run_configs(cfg)
        return [executor.submit(run_worker, command.hyper, command.model, 0, 1, objective, 1, True)]
    return _submit_workers(cfg, executor, workers, objective)


def _submit_workers(
    cfg: RunConfig, executor: submitit.Executor, workers: int, objective: type[BaseObjective] | None
) -> list[submitit.Job[int]]:
    command = save_run_configs(cfg)
    indexes = list(range(workers))
    n = [workers] * workers
    return executor.map_array(
        run_worker, [command.hyper] * workers, [command.model] * workers, indexes, n, [objective] * workers
    )


def _run_here(cfg: RunConfig, objective: type[BaseObjective]) -> int:
    from aimlutils.hyper_opt.worker import Worker

    return Worker(cfg, objective_class=objective).run()


def run_worker(
    hyper: Path,
    model: Path,
    index: int,
    n_workers: int,
    objective: type[BaseObjective] | None = None,
    max_trials: int | None = None,
    reraise: bool = False,
) -> int:
    """One worker, as a submitit job runs it: trials of the study saved in ``hyper``'s ``save_path``.

    SIGTERM (scancel, the time limit) fails the running trial and queues its parameters again, as
    for the workers of ``optimize.py``. Returns the number of trials this worker ran.
    """
    from aimlutils.hyper_opt.stop import StopSignal
    from aimlutils.hyper_opt.worker import Worker

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, StopSignal.handler)
    cfg = load_config(hyper, model, objective_given=objective is not None)
    keep_private(cfg.save_path, cfg.optuna.readable_by)
    worker = Worker(cfg, index, n_workers, objective_class=objective, max_trials=max_trials, reraise=reraise)
    return worker.run()

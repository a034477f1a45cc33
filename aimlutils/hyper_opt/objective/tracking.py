"""MLflow tracking for studies with an ``mlflow:`` section in ``hyper.yml``.

Each trial gets a run, nested under one run for the study: the trial's parameters, every number
``train`` returned, its intermediate values (metric ``intermediate_value``, one step each), its
state (``optuna.state`` tag: COMPLETE, PRUNED or FAIL, with ``fail_reason``) and the worker that ran
it (``worker.*`` tags). While ``train`` runs, the trial's run is MLflow's active run, so
``mlflow.log_artifact(...)`` or ``mlflow.pytorch.log_model(...)`` there lands in it.
``optimize.py report`` puts the best value (``best_<metric>``) and parameters (``best.<name>``
tags) on the study's run.

MLflow is imported only here and only when the section is present. Workers find the study's run
by its tags under a lock file in ``save_path``, so concurrent workers share one parent run.
"""

from __future__ import annotations

import contextlib
import logging
import numbers
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from aimlutils.hyper_opt.config import RunConfig
from aimlutils.hyper_opt.coordination import RECORD_ATTR, FileLock
from aimlutils.hyper_opt.errors import HyperOptError

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Run

logger = logging.getLogger(__name__)

ROLE_TAG = "aimlutils.role"
STUDY_TAG = "optuna.study_name"
STATE_TAG = "optuna.state"
INTERMEDIATE_METRIC = "intermediate_value"
_PARENT_TAG = "mlflow.parentRunId"  # what MLflow's own nested runs set
_BATCH = 1000  # MLflow takes at most 1000 metrics per call


class TrackingError(HyperOptError, RuntimeError):
    """The MLflow experiment or the study's run cannot be used."""


def tracking_uri(cfg: RunConfig) -> str:
    """``mlflow.tracking_uri``; by default a SQLite file in ``save_path/mlruns``.

    A relative ``sqlite:///`` path is taken from ``save_path``, so every worker finds the same file
    whatever directory it starts in.

    Example::

        tracking_uri(cfg)  # 'sqlite:////scratch/me/results/torch/mlruns/mlflow.db'
    """
    section = cfg.schema.mlflow
    uri = section.tracking_uri if section is not None else None
    if uri is None:
        return f"sqlite:///{cfg.paths.mlruns / 'mlflow.db'}"
    scheme, sep, rest = uri.partition(":///")
    if scheme == "sqlite" and sep and not rest.startswith("/"):
        return f"sqlite:///{cfg.save_path / rest}"
    return uri


def experiment_name(cfg: RunConfig) -> str:
    section = cfg.schema.mlflow
    return (section.experiment_name if section is not None else None) or cfg.study_name


def study_run(cfg: RunConfig) -> tuple[MlflowClient, str, Run]:
    """The client, the experiment id and the study's run, each created when missing.

    Raises:
        TrackingError: the experiment was deleted.
    """
    import mlflow

    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)  # also for the user's own mlflow.log_* calls in train
    cfg.save_path.mkdir(parents=True, exist_ok=True)
    lock = FileLock(cfg.paths.mlflow_lock)
    # Under the lock, so that workers starting together create the store's tables (the client
    # does, for a new SQLite file), one experiment and one study run.
    lock.acquire()
    try:
        client = mlflow.MlflowClient(uri)
        experiment_id = _experiment(client, cfg, uri)
        runs = client.search_runs([experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'study'")
        parent = next((r for r in runs if r.data.tags.get(STUDY_TAG) == cfg.study_name), None)
        if parent is None:
            tags = {
                ROLE_TAG: "study",
                STUDY_TAG: cfg.study_name,
                "optuna.metrics": ", ".join(cfg.metrics),
                "optuna.directions": ", ".join(cfg.directions),
                "optuna.storage": str(cfg.storage),
            }
            parent = client.create_run(experiment_id, run_name=cfg.study_name, tags=tags)
    finally:
        lock.release()
    return client, experiment_id, parent


def _experiment(client: MlflowClient, cfg: RunConfig, uri: str) -> str:
    name = experiment_name(cfg)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        # The default store keeps artifacts beside it, not in the directory a worker started in.
        default = cfg.schema.mlflow is None or cfg.schema.mlflow.tracking_uri is None
        location = (cfg.paths.mlruns / "artifacts").as_uri() if default else None
        return client.create_experiment(name, artifact_location=location)
    if experiment.lifecycle_stage == "deleted":
        raise TrackingError(
            f"MLflow experiment {name!r} in {uri} is deleted; restore it with 'mlflow experiments "
            f"restore --experiment-id {experiment.experiment_id}', or set mlflow.experiment_name "
            "to another name"
        )
    return str(experiment.experiment_id)


class TrialTracker:
    """Opens an MLflow run around each trial a worker runs.

    Example::

        tracker = TrialTracker(cfg, {"worker": 0, "host": "node1"})
        with tracker.trial_run(trial):
            mlflow.log_artifact("model.pt")  # goes to the trial's run
    """

    def __init__(
        self,
        cfg: RunConfig,
        identity: Mapping[str, Any] | None = None,
        held_records: Mapping[int, Mapping[str, Any]] | None = None,
    ) -> None:
        #: Records a worker holds until its trials end (they are not on the trial until then).
        self.held_records = held_records if held_records is not None else {}
        self.client, self.experiment_id, parent = study_run(cfg)
        self.parent_id = parent.info.run_id
        self.study_name = cfg.study_name
        self.identity = {k: v for k, v in (identity or {}).items() if v is not None}
        if parent.info.status != "RUNNING":
            # The study goes on (reload): the report had marked its run finished.
            self.client.update_run(self.parent_id, status="RUNNING")

    @contextlib.contextmanager
    def trial_run(self, trial: optuna.trial.BaseTrial) -> Iterator[object]:
        """The trial's run as MLflow's active run; its state is recorded however the block ends."""
        run_id = self._start(trial)
        if run_id is None:
            yield None
            return
        state, status, reason = TrialState.COMPLETE, "FINISHED", None
        try:
            yield run_id
        except optuna.TrialPruned:
            state = TrialState.PRUNED
            raise
        except Exception as err:
            state, status, reason = TrialState.FAIL, "FAILED", f"{type(err).__name__}: {err}"
            raise
        except BaseException:
            state, status, reason = TrialState.FAIL, "KILLED", "interrupted (Ctrl-C or SIGTERM)"
            raise
        finally:
            self._finish(trial, run_id, state, status, reason)

    def _start(self, trial: optuna.trial.BaseTrial) -> str | None:
        import mlflow

        tags = {_PARENT_TAG: self.parent_id, STUDY_TAG: self.study_name, "optuna.trial_number": trial.number}
        tags.update({f"worker.{k}": v for k, v in self.identity.items()})
        try:
            run = mlflow.start_run(
                experiment_id=self.experiment_id, run_name=f"trial_{trial.number}", tags=tags
            )
        except Exception as err:  # a tracking outage must not stop the study
            logger.warning(
                "trial %d: no MLflow run (%s: %s); it runs untracked", trial.number, type(err).__name__, err
            )
            return None
        return str(run.info.run_id)

    def _finish(
        self, trial: optuna.trial.BaseTrial, run_id: str, state: TrialState, status: str, reason: str | None
    ) -> None:
        import mlflow
        from mlflow.entities import Param, RunTag

        now = int(time.time() * 1000)
        tags = [RunTag(STATE_TAG, state.name)] + ([RunTag("fail_reason", reason[:5000])] if reason else [])
        try:
            record = trial.user_attrs.get(RECORD_ATTR) or self.held_records.get(trial.number) or {}
            metrics = numeric_metrics(record.get("results") or {}, now)
            steps = sorted(_intermediate(trial).items())
            metrics += [_metric(INTERMEDIATE_METRIC, v, now, s) for s, v in steps]
            for start in range(0, max(len(metrics), 1), _BATCH):
                self.client.log_batch(
                    run_id, metrics=metrics[start : start + _BATCH], tags=tags if not start else ()
                )
            # Last: a parameter train() already logged with another value is refused.
            self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in trial.params.items()])
        except Exception as err:  # the trial's result is in the study; tracking is a copy
            logger.warning("trial %d: MLflow logging failed (%s: %s)", trial.number, type(err).__name__, err)
        finally:
            active = mlflow.active_run()
            if active is not None and active.info.run_id == run_id:
                mlflow.end_run(status=status)
            else:
                self.client.set_terminated(run_id, status=status)


def _intermediate(trial: optuna.trial.BaseTrial) -> dict[int, float]:
    if isinstance(trial, optuna.Trial):
        return dict(trial.storage.get_trial(trial._trial_id).intermediate_values)
    return {}


def _metric(key: str, value: Any, timestamp: int, step: int) -> Metric:
    from mlflow.entities import Metric

    # MLflow allows letters, digits and _ - . / and space in names.
    return Metric(re.sub(r"[^\w\-./ ]", "_", key), float(value), timestamp, int(step))


def numeric_metrics(results: Mapping[str, Any], timestamp: int, prefix: str = "") -> list[Metric]:
    """The numbers among ``results`` as MLflow metrics at step 0 (text and flags are skipped)."""
    return [
        _metric(prefix + k, v, timestamp, 0)
        for k, v in results.items()
        if isinstance(v, numbers.Real) and not isinstance(v, bool)
    ]


def log_best(cfg: RunConfig, study: optuna.Study) -> str:
    """Put the best value(s) and parameters on the study's run; returns a line saying where.

    One objective: metric ``best_<metric>`` (step: completed trials so far) and every other number
    the best trial returned as ``best_<key>``, tags ``best_trial`` and ``best.<parameter>``. Several:
    tags ``pareto_trials`` and metric ``pareto_size``. The run is marked finished once the study is.
    """
    from mlflow.entities import RunTag

    from aimlutils.hyper_opt.coordination import count, read_record

    client, _, parent = study_run(cfg)
    run_id = parent.info.run_id
    now = int(time.time() * 1000)
    counts = count(study.get_trials(deepcopy=False))
    n_complete = counts[TrialState.COMPLETE]
    if len(study.directions) == 1:
        best = study.best_trial
        results = {cfg.metrics[0]: best.value, **(read_record(best).get("results") or {})}
        metrics = [
            _metric(m.key, m.value, now, n_complete) for m in numeric_metrics(results, now, prefix="best_")
        ]
        tags = [RunTag("best_trial", str(best.number))]
        tags += [RunTag(f"best.{k}", str(v)) for k, v in best.params.items()]
        what = f"best {cfg.metrics[0]} {best.value:.6g} (trial {best.number})"
    else:
        front = sorted(t.number for t in study.best_trials)
        metrics = [_metric("pareto_size", len(front), now, n_complete)]
        tags = [RunTag("pareto_trials", ", ".join(map(str, front)))]
        what = f"Pareto front of {len(front)} trials"
    client.log_batch(run_id, metrics=metrics, tags=tags)
    if n_complete + counts[TrialState.PRUNED] >= cfg.optuna.n_trials and not counts[TrialState.RUNNING]:
        client.set_terminated(run_id, status="FINISHED")
    return (
        f"MLflow: {what} logged on run {run_id} of experiment {experiment_name(cfg)!r} in {tracking_uri(cfg)}"
    )

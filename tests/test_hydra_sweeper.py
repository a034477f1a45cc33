"""Settings of the Hydra Optuna sweeper (``hydra.sweeper.<key>=value``) set the study here."""

from __future__ import annotations

from pathlib import Path

import pytest

from aimlutils.hyper_opt import cli
from aimlutils.hyper_opt.config import ConfigError, load_config
from tests.conftest import run_optimize

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("override", "attribute", "value"),
    [
        ("hydra.sweeper.n_trials=7", "n_trials", 7),
        ("hydra.sweeper.direction=maximize", "direction", "maximize"),
        ("hydra.sweeper.sampler.seed=123", "sampler", {"type": "RandomSampler", "seed": 123}),
        ("hydra.sweeper.sampler._target_=optuna.samplers.TPESampler", "sampler", {"type": "TPESampler"}),
        ("hydra/sweeper/sampler=random", "sampler", {"type": "RandomSampler"}),
    ],
)
def test_sweeper_settings_set_the_optuna_section(study_files, override, attribute, value):
    hyper, model = study_files()  # sampler: {type: RandomSampler}
    cfg = load_config(hyper, model, hyper.parent, overrides=[override])
    assert getattr(cfg.optuna, attribute) == value


def test_study_name_and_storage_replace_the_files(study_files):
    hyper, model = study_files(storage="study.db", storage_type="sqlite")
    overrides = ["hydra.sweeper.study_name=mine", "hydra.sweeper.storage=sqlite:///x.db"]
    cfg = load_config(hyper, model, hyper.parent, overrides=overrides)
    assert cfg.study_name == "mine"
    assert cfg.storage.location == f"sqlite:///{(hyper.parent / 'x.db').resolve()}"
    cfg = load_config(hyper, model, hyper.parent, overrides=["hydra.sweeper.storage=null"])
    assert cfg.storage.kind == "journal"


def test_a_sampler_group_comes_before_its_arguments_whatever_the_order(study_files):
    hyper, model = study_files()
    overrides = ["hydra.sweeper.sampler.seed=1", "hydra/sweeper/sampler=tpe"]
    cfg = load_config(hyper, model, hyper.parent, overrides=overrides)
    assert cfg.optuna.sampler == {"type": "TPESampler", "seed": 1}


def test_n_jobs_is_the_local_worker_count(study_files):
    hyper, model = study_files()
    args, _ = cli.parse_args([str(hyper), str(model), "hydra.sweeper.n_jobs=3", "--local"])
    assert args.workers == 3
    args, _ = cli.parse_args([str(hyper), str(model), "hydra.sweeper.n_jobs=3", "--workers", "3"])
    assert args.workers == 3
    with pytest.raises(SystemExit) as info:
        cli.parse_args([str(hyper), str(model), "hydra.sweeper.n_jobs=3", "--workers", "2"])
    assert info.value.code == 2


def test_multirun_and_the_sweeper_and_launcher_groups_are_accepted_and_noted(study_files):
    hyper, model = study_files()
    argv = [str(hyper), "-m", str(model), "hydra/sweeper=optuna", "--local", "hydra/launcher=joblib"]
    args, _ = cli.parse_args(argv)
    assert args.local and args.multirun
    assert args.overrides == ["hydra/sweeper=optuna", "hydra/launcher=joblib"]
    assert args.no_effect == ["hydra/sweeper=optuna", "hydra/launcher=joblib", "-m"]
    cfg = load_config(hyper, model, hyper.parent, overrides=args.overrides)
    assert cfg.hyper["optuna"] == load_config(hyper, model, hyper.parent).hyper["optuna"]


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("hydra.sweeper.max_failure_rate=0.5", "has no counterpart here: a failed trial is recorded FAIL"),
        ("hydra.sweeper.params.x=interval(0, 1)", "give each parameter as its own override"),
        ("hydra.sweeper.custom_search_space=.configure", "custom_updates"),
        ("hydra.sweeper.n_trials_max=3", "not a setting of the Hydra Optuna sweeper; understood: "),
        (
            "hydra.sweeper.n_jobs=0",
            "hydra.sweeper.n_jobs: got 0; the number of local workers, an integer >= 1",
        ),
        ("hydra.sweeper.n_trials=range(1, 3)", "takes a plain value, not a sweep"),
        ("hydra.sweeper.study_name=null", "the study needs a name"),
        ("hydra.sweeper.study_name=${run_id}", "hydra.sweeper.study_name: ${run_id} names no key"),
        ("hydra.sweeper.study_name=${now:%H}", "only ${key.path} of the model config"),
        ("hydra.sweeper.sampler._target_=my.Sampler", "allowed: optuna.samplers.<Name>"),
        ("hydra/sweeper/sampler=motpe", "removed in Optuna 4.0"),
        ("hydra/sweeper=ax", "the one sweeper understood here is optuna"),
        ("hydra.launcher.n_jobs=4", "--workers or hydra.sweeper.n_jobs"),
        ("hydra.run.dir=out", "results go to optuna.save_path"),
        ("hydra/job_logging=disabled", "config group of Hydra, which has no counterpart here"),
    ],
)
def test_sweeper_keys_without_a_counterpart_are_refused(study_files, override, words):
    hyper, model = study_files()
    with pytest.raises(ConfigError) as info:
        load_config(hyper, model, hyper.parent, overrides=[override])
    assert f"override {override!r}: " in str(info.value)
    assert words in str(info.value)


def test_refused_sweeper_keys_exit_2_having_created_nothing(study_files):
    hyper, model = study_files()
    proc = run_optimize(
        hyper, model, "hydra.sweeper.max_failure_rate=0.5", "hydra/launcher=joblib", "--multirun"
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "the command line has 1 problem" in proc.stderr
    assert "hydra.sweeper.max_failure_rate has no counterpart here" in proc.stderr
    assert not (hyper.parent / "results").exists()

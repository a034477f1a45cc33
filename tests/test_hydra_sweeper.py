"""Command lines of the Hydra Optuna sweeper search the same space here, and set the same study.

``hydra.sweeper.<key>=value`` settings map onto the ``optuna`` section (the tests at the end).

The expected distributions are what the sweeper's ``create_optuna_distribution_from_override``
(``plugins/hydra_optuna_sweeper/hydra_plugins/hydra_optuna_sweeper/_impl.py`` in Hydra) builds
from each override, given what Hydra's grammar functions (``hydra/_internal/grammar/
grammar_functions.py``) hand it: ``interval`` makes both bounds floats, ``range(n)`` is
``range(0, n)``, ``int(...)`` / ``float(...)`` cast every bound. Each row says which branch of the
sweeper produces it.
"""

from __future__ import annotations

import shlex
import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from aimlutils.hyper_opt import cli
from aimlutils.hyper_opt.config import ConfigError, load_config
from aimlutils.hyper_opt.search_space.overrides import parse_override
from aimlutils.hyper_opt.search_space.params import parameter_from_settings
from tests.conftest import run_optimize

ROOT = Path(__file__).resolve().parents[1]


def optuna_builds(cls: type[BaseDistribution], *args: Any, **kwargs: Any) -> BaseDistribution:
    """The distribution as the sweeper passes it to Optuna (which lowers a stop off the grid)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(*args, **kwargs)


# (kind, override, what the sweeper builds). Shuffled categoricals are compared as sets, since
# the sweeper shuffles their order.
SWEEPER_TABLE = [
    # is_interval_sweep, no log tag, bounds not both int: FloatDistribution(start, end).
    ("interval", "x=interval(-5.0, 5.0)", optuna_builds(FloatDistribution, -5.0, 5.0)),
    ("interval", "x=interval(1, 5)", optuna_builds(FloatDistribution, 1.0, 5.0)),
    ("interval", "x=interval(0.00001, 0.001)", optuna_builds(FloatDistribution, 1e-5, 1e-3)),
    ("interval", "x=interval(start=0, end=1)", optuna_builds(FloatDistribution, 0.0, 1.0)),
    # ... both int (only after int()): IntDistribution(start, end).
    ("int(interval)", "x=int(interval(1, 5))", optuna_builds(IntDistribution, 1, 5)),
    ("int(interval)", "x=int(interval(-5.0, 5.0))", optuna_builds(IntDistribution, -5, 5)),
    # "log" in tags: FloatDistribution(start, end, log=True), IntDistribution(..., log=True) for ints.
    (
        "tag(log, interval)",
        "x=tag(log, interval(1, 10))",
        optuna_builds(FloatDistribution, 1.0, 10.0, log=True),
    ),
    (
        "tag(log, interval)",
        "x=tag(log, interval(0.00001, 0.001))",
        optuna_builds(FloatDistribution, 1e-5, 1e-3, log=True),
    ),
    (
        "tag(log, int(interval))",
        "x=tag(log, int(interval(1, 5)))",
        optuna_builds(IntDistribution, 1, 5, log=True),
    ),
    # is_range_sweep, all int: IntDistribution(start, stop, step=step), step 1 by default.
    ("range", "x=range(1, 10)", optuna_builds(IntDistribution, 1, 10, step=1)),
    ("range", "x=range(1,3)", optuna_builds(IntDistribution, 1, 3, step=1)),
    ("range", "x=range(3, 4)", optuna_builds(IntDistribution, 3, 4, step=1)),
    # ... any float: FloatDistribution(start, stop, step=step).
    ("range", "x=range(-5.0, 5.0)", optuna_builds(FloatDistribution, -5.0, 5.0, step=1)),
    ("range with step", "x=range(16, 128, step=16)", optuna_builds(IntDistribution, 16, 128, step=16)),
    ("range with step", "x=range(16, 128, 16)", optuna_builds(IntDistribution, 16, 128, step=16)),
    ("range with step", "x=range(1, 10, step=2)", optuna_builds(IntDistribution, 1, 10, step=2)),
    (
        "range with step",
        "x=range(start=1, stop=9, step=2)",
        optuna_builds(IntDistribution, 1, 9, step=2),
    ),
    (
        "range with step",
        "x=range(0.5, 2.5, step=0.5)",
        optuna_builds(FloatDistribution, 0.5, 2.5, step=0.5),
    ),
    (
        "range with step",
        "x=range(-5.5, 5.5, step=0.5)",
        optuna_builds(FloatDistribution, -5.5, 5.5, step=0.5),
    ),
    ("range with step", "x=range(-5.5, 5.5, 0.5)", optuna_builds(FloatDistribution, -5.5, 5.5, step=0.5)),
    ("range with step", "x=range(0.5, 5.5, step=1)", optuna_builds(FloatDistribution, 0.5, 5.5, step=1)),
    ("range with step", "x=range(0, 1, step=0.3)", optuna_builds(FloatDistribution, 0, 1, step=0.3)),
    # Hydra's range(n): start 0, stop n.
    ("one-argument range", "x=range(5)", optuna_builds(IntDistribution, 0, 5, step=1)),
    ("one-argument range", "x=range(5, step=2)", optuna_builds(IntDistribution, 0, 5, step=2)),
    ("one-argument range", "x=range(2.5)", optuna_builds(FloatDistribution, 0, 2.5, step=1)),
    # float() casts start, stop and step: the float branch.
    ("float(range)", "x=float(range(1, 5))", optuna_builds(FloatDistribution, 1.0, 5.0, step=1.0)),
    # is_choice_sweep: CategoricalDistribution of the items.
    ("choice", "x=choice(1,2)", CategoricalDistribution([1, 2])),
    ("choice", "x=choice(true, false)", CategoricalDistribution([True, False])),
    ("choice", "x=choice('hello', 'world')", CategoricalDistribution(["hello", "world"])),
    ("choice", "x=choice(-5.0, 0.0, 5.0)", CategoricalDistribution([-5.0, 0.0, 5.0])),
    ("choice", "x=choice(relu, tanh)", CategoricalDistribution(["relu", "tanh"])),
    ("choice", "x=int(choice(1.5, 2))", CategoricalDistribution([1, 2])),
    # Hydra's simple choice a,b,c is a choice sweep too.
    ("choice a,b,c", "x=relu,tanh", CategoricalDistribution(["relu", "tanh"])),
    ("choice a,b,c", "x=1,2,3", CategoricalDistribution([1, 2, 3])),
    # shuffle: a range becomes categorical over the values Hydra's range lists (stop excluded).
    ("shuffle(range)", "x=shuffle(range(1,3))", CategoricalDistribution([1, 2])),
    ("shuffle(range)", "x=shuffle(range(-5, 5))", CategoricalDistribution(list(range(-5, 5)))),
    ("shuffle(range)", "x=shuffle(range(0, 1, step=0.25))", CategoricalDistribution([0.0, 0.25, 0.5, 0.75])),
    ("shuffle(choice)", "x=shuffle(choice(a, b, c))", CategoricalDistribution(["a", "b", "c"])),
    ("shuffle(choice)", "x=shuffle(a, b)", CategoricalDistribution(["a", "b"])),
]


@pytest.mark.parametrize(("kind", "override", "expected"), SWEEPER_TABLE, ids=[r[1] for r in SWEEPER_TABLE])
def test_each_sweep_gives_the_distribution_the_sweeper_builds(kind, override, expected):
    parsed = parse_override(override)
    parameter, problems = parameter_from_settings(parsed.kind, {**parsed.settings, "name": "x"}, "", "x")
    assert problems == [] and parameter is not None, problems
    actual = parameter.distribution
    if kind.startswith("shuffle"):
        assert isinstance(actual, CategoricalDistribution)
        assert set(actual.choices) == set(expected.choices)
    else:
        assert actual == expected  # the same class and the same bounds, step, log and choices


def test_the_table_covers_every_kind_the_sweeper_turns_into_a_distribution():
    kinds = {kind for kind, _, _ in SWEEPER_TABLE}
    assert {
        "interval",
        "tag(log, interval)",
        "range",
        "range with step",
        "one-argument range",
        "choice",
    } <= kinds


# The examples of the seed's hyperparameter-search page, with the program name and the keys of
# hannah's model config replaced by those of examples/torch: scheduler.max_lr -> the learning rate,
# optimizer.weight_decay stays, trainer.max_epochs -> trainer.epochs, module.num_workers (a fixed
# setting) -> data.validation_fraction=0.25. The example's model.yml has no experiment_id, which
# hannah's config has at the top; the study files below add one.
SEED_LINE_1 = (
    "hannah-train scheduler.max_lr='interval(0.00001, 0.001)' "
    "optimizer.weight_decay='interval(0.00001, 0.001)' hydra/sweeper=optuna hydra/launcher=joblib -m"
)
SEED_LINE_2 = (
    'hannah-train experiment_id="test_optuna_resume" hydra/sweeper=optuna '
    "hydra.sweeper.study_name='${experiment_id}' "
    "hydra.sweeper.storage='sqlite:///${experiment_id}.sqlite'  trainer.max_epochs=15 "
    "scheduler.max_lr='interval(0.0001, 0.1)' module.num_workers=4 -m"
)
ADAPT = {
    "scheduler.max_lr=": "optimizer.learning_rate=",
    "trainer.max_epochs=": "trainer.epochs=",
    "module.num_workers=4": "data.validation_fraction=0.25",
}

# A fast stand-in for the example's objective: the same custom_updates, no training.
OBJECTIVE = """
from aimlutils.hyper_opt.base_objective import *


def custom_updates(trial, conf):
    settings = conf["optuna"]["parameters"]["num_dense"]["settings"]
    conf["model"]["hidden_dims"] = [conf["model"]["hidden_dims"][0]] * trial.suggest_int(**settings)
    return conf


class Objective(BaseObjective):
    def __init__(self, study, config, metric="val_loss", device="cpu"):
        BaseObjective.__init__(self, study, config, metric, device)

    def train(self, trial, conf):
        opt = conf["optimizer"]
        loss = (opt["learning_rate"] - 0.001) ** 2 + opt["weight_decay"] + conf["model"]["dropout"]
        return {"val_loss": loss}
"""


def adapted(line: str) -> list[str]:
    """The seed's command line as the shell splits it, for optimize.py and the example's keys."""
    words = shlex.split(line)
    assert words[0] == "hannah-train"
    out = []
    for word in words[1:]:
        for theirs, ours in ADAPT.items():
            word = word.replace(theirs, ours)
        out.append(word)
    return out


@pytest.fixture
def torch_example(tmp_path: Path) -> tuple[Path, Path]:
    hyper = yaml.safe_load((ROOT / "examples/torch/hyper.yml").read_text())
    hyper["optuna"]["objective"] = str(tmp_path / "objective.py")
    hyper["optuna"]["save_path"] = str(tmp_path / "results")
    hyper["optuna"]["gpu"] = False
    hyper["log"]["save_path"] = str(tmp_path / "results/log.txt")
    model = yaml.safe_load((ROOT / "examples/torch/model.yml").read_text())
    model["experiment_id"] = "example"
    (tmp_path / "objective.py").write_text(OBJECTIVE)
    (tmp_path / "hyper.yml").write_text(yaml.safe_dump(hyper, sort_keys=False))
    (tmp_path / "model.yml").write_text(yaml.safe_dump(model, sort_keys=False))
    return tmp_path / "hyper.yml", tmp_path / "model.yml"


def test_the_seeds_first_command_line_searches_its_two_intervals(torch_example):
    hyper, model = torch_example
    args, _ = cli.parse_args([str(hyper), str(model), *adapted(SEED_LINE_1)])
    assert args.multirun and args.no_effect == ["hydra/sweeper=optuna", "hydra/launcher=joblib", "-m"]
    cfg = load_config(args.hyper, args.model, hyper.parent, overrides=args.overrides)
    dists = cfg.space.distributions
    # The learning rate keeps the name hyper.yml gives it; weight_decay is a new parameter.
    assert dists["lr"] == FloatDistribution(1e-5, 1e-3)
    assert dists["optimizer.weight_decay"] == FloatDistribution(1e-5, 1e-3)
    assert set(dists) == {"num_dense", "dropout", "lr", "batch_size", "optimizer.weight_decay"}
    # The line sets no trials, storage or name: the sweeper's defaults (20 trials, in memory, a
    # generated name) have no counterpart, so hyper.yml's apply.
    assert cfg.optuna.n_trials == 20
    assert cfg.study_name == "torch_digits"
    assert cfg.storage.kind == "journal"


def test_the_seeds_second_command_line_runs_its_named_sqlite_study(torch_example):
    hyper, model = torch_example
    proc = run_optimize(hyper, model, *adapted(SEED_LINE_2), "--local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("no effect here") == 1
    assert "Note: hydra/sweeper=optuna -m: no effect here" in proc.stdout
    # The sweeper's storage and study name, from the experiment_id the line sets.
    database = hyper.parent / "test_optuna_resume.sqlite"
    assert database.is_file()
    study = optuna.load_study(study_name="test_optuna_resume", storage=f"sqlite:///{database}")
    trials = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    # 20: the sweeper's default n_trials, and what the example's hyper.yml says.
    assert len(trials) == 20
    assert all(t.distributions["lr"] == FloatDistribution(0.0001, 0.1) for t in trials)
    saved = load_config(
        hyper.parent / "results/configs/hyper.yml", hyper.parent / "results/configs/model.yml"
    )
    assert saved.study_name == "test_optuna_resume"
    assert saved.model["trainer"]["epochs"] == 15
    assert saved.model["data"]["validation_fraction"] == 0.25
    assert saved.model["experiment_id"] == "test_optuna_resume"


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

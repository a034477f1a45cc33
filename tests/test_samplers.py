"""The sampler a study gets per worker count when ``optuna.sampler`` is not set, or set in part."""

from __future__ import annotations

import optuna
import pytest

from aimlutils.hyper_opt.config import load_config
from aimlutils.hyper_opt.coordination import study as study_lib
from aimlutils.hyper_opt.search_space import samplers
from aimlutils.hyper_opt.storage import open_storage

MANY = samplers.INDEPENDENT_TPE_WORKERS


@pytest.mark.parametrize(
    ("workers", "expected"),
    [
        (1, {"type": "TPESampler"}),
        (8, {"type": "TPESampler", "constant_liar": True}),
        (MANY, {"type": "TPESampler", "constant_liar": True, "multivariate": False}),
        (32, {"type": "TPESampler", "constant_liar": True, "multivariate": False}),
    ],
)
def test_no_sampler_set_gives_tpe_tuned_to_the_worker_count(workers, expected):
    assert samplers.sampler_spec(None, workers) == expected


def test_a_study_of_many_workers_with_no_sampler_loads_independent_tpe_with_a_liar(study_files):
    hyper, model = study_files(sampler=None)
    cfg = load_config(hyper, model)
    study_lib.create_or_load(cfg, open_storage(cfg.storage), MANY)
    few = study_lib.load(cfg, open_storage(cfg.storage), MANY - 1).sampler
    many = study_lib.load(cfg, open_storage(cfg.storage), MANY).sampler
    assert isinstance(few, optuna.samplers.TPESampler) and isinstance(many, optuna.samplers.TPESampler)
    # Optuna keeps these settings private; None is its default, multivariate for one objective.
    assert few._constant_liar and few._multivariate is None
    assert many._constant_liar and many._multivariate is False


@pytest.mark.parametrize(
    "given",
    [
        {"type": "TPESampler", "multivariate": True},
        {"type": "TPESampler", "multivariate": True, "group": True},
        {"type": "TPESampler", "group": True},
    ],
)
@pytest.mark.filterwarnings(
    "ignore:Argument ``group`` is an experimental feature:optuna.exceptions.ExperimentalWarning"
)
def test_settings_the_user_gives_are_kept_with_many_workers(given):
    spec = samplers.sampler_spec(given, 32)
    assert "multivariate" not in spec or spec["multivariate"] is True
    built, problems = samplers.build("sampler", spec, "optuna.sampler")
    assert problems == [] and isinstance(built, optuna.samplers.TPESampler)


def test_other_samplers_are_left_alone_with_many_workers():
    assert samplers.sampler_spec({"type": "RandomSampler", "seed": 3}, 32, 2) == {
        "type": "RandomSampler",
        "seed": 5,
    }

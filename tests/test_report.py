"""``optimize.py report``: terminal summary, best.yml, the trials table and the plots."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from aimlutils.hyper_opt import cli
from aimlutils.hyper_opt.config import ConfigError, RunConfig, load_config
from aimlutils.hyper_opt.coordination import study as study_lib
from aimlutils.hyper_opt.coordination import write_record
from aimlutils.hyper_opt.objective.loader import import_objective_module
from aimlutils.hyper_opt.report import best_config, load_style
from aimlutils.hyper_opt.storage import open_storage
from tests.conftest import needs_module

ROOT = Path(__file__).resolve().parents[1]
SINGLE_PLOTS = (
    "optimization_history",
    "intermediate_values",
    "param_importances",
    "parallel_coordinate",
    "slice",
    "contour",
)
TWO_PARAMETERS = {
    "optimizer:learning_rate": {"type": "float", "settings": {"name": "lr", "low": 0.0, "high": 1.0}},
    "optimizer:weight_decay": {"type": "loguniform", "settings": {"name": "wd", "low": 1e-5, "high": 1e-1}},
}


def needs_plotting() -> None:
    for name in ("matplotlib", "plotly", "sklearn"):
        needs_module(name)


def assert_image(path: Path) -> None:
    """``path`` is a PNG with a drawing on it, not an empty canvas."""
    import matplotlib.image

    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and min(pixels.shape[:2]) > 100, (path, pixels.shape)
    assert pixels.std() > 0.02, f"{path} is blank"


def new_study(study_files: Callable[..., tuple[Path, Path]], **optuna_kw: Any) -> tuple[list[str], RunConfig]:
    """A study with no trials; returns the report's ``hyper.yml model.yml`` arguments and config."""
    hyper, model = study_files(**optuna_kw)
    cfg = load_config(hyper, model)
    study_lib.create_or_load(cfg, open_storage(cfg.storage), 1)
    return [str(hyper), str(model)], cfg


def add_trial(
    cfg: RunConfig,
    params: dict[str, Any],
    values: list[float] | None = None,
    state: TrialState = TrialState.COMPLETE,
    steps: tuple[float, ...] = (),
    reason: str | None = None,
) -> None:
    """A finished trial as a worker leaves it: values, intermediate values, record."""
    study = study_lib.load(cfg, open_storage(cfg.storage), 1)
    study.enqueue_trial(params)
    trial = study.ask()
    cfg.space.suggest(trial)
    for step, value in enumerate(steps):
        trial.report(value, step)
    results = dict(zip(cfg.metrics, values or [], strict=False)) or None
    write_record(trial, results=results, worker={"worker": 0}, fail_reason=reason)
    study.tell(trial, values if state == TrialState.COMPLETE else None, state=state)


def report(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = cli.main(["report", *args])
    return code, capsys.readouterr().out


def test_torch_example_report_trains_the_winner_and_draws_every_plot(tmp_path):
    """The acceptance case: best.yml reproduces the best trial's score with objective.py as-is."""
    needs_module("torch")
    needs_plotting()
    hyper = yaml.safe_load((ROOT / "examples/torch/hyper.yml").read_text())
    hyper["optuna"].update(n_trials=6, save_path=str(tmp_path / "results"))
    hyper["optuna"]["pruner"]["n_startup_trials"] = 2
    hyper["log"]["save_path"] = str(tmp_path / "results/log.txt")
    model = yaml.safe_load((ROOT / "examples/torch/model.yml").read_text())
    model["trainer"]["epochs"] = 4
    (tmp_path / "hyper.yml").write_text(yaml.safe_dump(hyper, sort_keys=False))
    (tmp_path / "model.yml").write_text(yaml.safe_dump(model, sort_keys=False))
    run = [sys.executable, str(ROOT / "optimize.py")]
    proc = subprocess.run(
        [*run, str(tmp_path / "hyper.yml"), str(tmp_path / "model.yml"), "--local", "--workers", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # model.yml left out: the copy saved when the study started is used.
    saved_hyper = tmp_path / "results/configs/hyper.yml"
    proc = subprocess.run(
        [*run, "report", str(saved_hyper)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cfg = load_config(saved_hyper, tmp_path / "results/configs/model.yml")
    best = optuna.load_study(study_name=cfg.study_name, storage=open_storage(cfg.storage)).best_trial
    assert f"Best trial {best.number}: val_loss = {best.value:.6g}" in proc.stdout
    assert "Top " in proc.stdout and "Trials by state" in proc.stdout

    out = tmp_path / "results/report"
    conf = yaml.safe_load((out / "best.yml").read_text())
    p = best.params
    assert conf["optimizer"]["learning_rate"] == p["lr"]
    assert conf["model"]["dropout"] == p["dropout"]
    assert conf["trainer"]["batch_size"] == p["batch_size"]
    assert conf["model"]["hidden_dims"] == [64] * p["num_dense"]  # custom_updates ran too
    assert "optuna" not in conf
    module = import_objective_module(ROOT / "examples/torch/objective.py")
    results = module.Objective(None, conf).train(optuna.trial.FixedTrial(p), conf)
    assert results["val_loss"] == pytest.approx(best.value, rel=1e-4)

    with open(out / "trials.csv", newline="") as fh:
        assert len([r for r in csv.DictReader(fh) if r["state"] in ("COMPLETE", "PRUNED")]) == 6
    for name in SINGLE_PLOTS:
        assert_image(out / "plots" / f"{name}.png")
        assert (out / "plots" / f"{name}.pdf").stat().st_size > 1000
        assert "plotly" in (out / "plots" / f"{name}.html").read_text()
    assert (out / "plots/plotly.min.js").exists()  # the pages open offline


def test_multi_objective_report_shows_the_pareto_front(tmp_path, study_files, capsys):
    needs_plotting()
    files, cfg = new_study(
        study_files,
        metric=["val_loss", "val_accuracy"],
        direction=["minimize", "maximize"],
        parameters=TWO_PARAMETERS,
    )
    points = [(0.1, 0.01, 0.2, 0.6), (0.2, 0.001, 0.3, 0.7), (0.3, 0.02, 0.4, 0.8), (0.4, 0.05, 0.5, 0.55)]
    for lr, wd, loss, acc in points:
        add_trial(cfg, {"lr": lr, "wd": wd}, [loss, acc])
    style = tmp_path / "style.yml"
    style.write_text(yaml.safe_dump({"formats": ["png", "html"], "dpi": 60, "log_value": True}))
    code, out = report(capsys, *files, "--style", str(style))
    assert code == 0, out
    # Trials 0, 1 and 2 trade loss for accuracy; trial 3 is worse on both than trial 0.
    assert "Pareto front: 3 trials (val_loss minimized, val_accuracy maximized)" in out
    folder = cfg.save_path / "report"
    assert sorted(p.name for p in (folder / "pareto").iterdir()) == [
        "trial_0.yml",
        "trial_1.yml",
        "trial_2.yml",
    ]
    conf = yaml.safe_load((folder / "pareto/trial_1.yml").read_text())
    assert conf["optimizer"]["learning_rate"] == 0.2 and conf["optimizer"]["weight_decay"] == 0.001
    assert not (folder / "best.yml").exists()
    for name in (
        "pareto_front",
        "param_importances",
        "optimization_history_val_loss",
        "contour_val_accuracy",
    ):
        assert_image(folder / "plots" / f"{name}.png")
        assert (folder / "plots" / f"{name}.html").exists()
    assert not list((folder / "plots").glob("*.pdf"))  # the style asked for PNG and HTML only


@pytest.mark.parametrize("case", ["no trials", "pruned only", "one completed", "only failed"])
def test_reports_without_enough_trials_say_so(study_files, capsys, case):
    files, cfg = new_study(study_files)
    if case == "pruned only":
        add_trial(cfg, {"lr": 0.5}, state=TrialState.PRUNED, steps=(0.9, 0.8))
    if case == "one completed":
        add_trial(cfg, {"lr": 0.5}, [0.04], steps=(0.9,))
    if case == "only failed":
        for lr in (0.1, 0.2):
            add_trial(cfg, {"lr": lr}, state=TrialState.FAIL, reason="RuntimeError: CUDA out of memory")
    # aimlutils-report is the same command.
    code = cli.report_main(files)
    out = capsys.readouterr().out
    assert code == 0, out
    expected = {
        "no trials": "has no trials yet: nothing to report.",
        "pruned only": "No trial of study",
        "one completed": "Only 1 trial of study",
        "only failed": "All 2 finished trials of study",
    }[case]
    assert expected in out
    folder = cfg.save_path / "report"
    assert not (folder / "plots").exists()
    assert (folder / "best.yml").exists() == (case == "one completed")
    if case == "only failed":
        assert "The first failure (trial 0): RuntimeError: CUDA out of memory" in out
    if case == "one completed":
        assert yaml.safe_load((folder / "best.yml").read_text())["optimizer"]["learning_rate"] == 0.5
        assert "Best trial 0: val_loss = 0.04" in out


def test_report_on_a_missing_study_says_how_to_start_it(study_files, capsys):
    hyper, _ = study_files()
    code, out = report(capsys, str(hyper))
    assert code == 1
    assert "No study" in out and "optimize.py hyper.yml model.yml" in out


def test_style_file_errors_name_the_key_and_what_is_allowed(tmp_path):
    assert load_style(ROOT / "configs/report-style.yml").dpi == 300  # the shipped example is valid
    bad = tmp_path / "style.yml"
    bad.write_text(yaml.safe_dump({"widht": 5, "formats": ["png", "svg"], "dpi": 0}))
    with pytest.raises(ConfigError) as err:
        load_style(bad)
    text = str(err.value)
    assert "widht: unknown key (did you mean 'width'?)" in text
    assert "formats.1: got 'svg'" in text and "'png', 'pdf' or 'html'" in text
    assert "dpi: got 0" in text


def test_best_config_without_an_importable_custom_updates_says_what_is_missing(study_files):
    hyper, model = study_files(
        parameters={
            **TWO_PARAMETERS,
            "num_dense": {"type": "int", "settings": {"name": "num_dense", "low": 0, "high": 4}},
        }
    )
    objective = hyper.parent / "objective.py"
    objective.write_text("import package_that_is_not_installed\n" + objective.read_text())
    cfg = load_config(hyper, model)
    study, _ = study_lib.create_or_load(cfg, open_storage(cfg.storage), 1)
    add_trial(cfg, {"lr": 0.25, "wd": 0.01, "num_dense": 3}, [0.1])
    conf, notes = best_config(cfg, study.best_trial)
    assert conf["optimizer"]["learning_rate"] == 0.25 and conf["optimizer"]["weight_decay"] == 0.01
    assert any("could not be imported here" in n and "package_that_is_not_installed" in n for n in notes)
    assert any("num_dense" in n for n in notes)

"""The documentation: the ``hyper.yml`` reference matches the schema, every Python and YAML example
in the docs and the README runs (or, for YAML, passes the package's own checks), and the built
site has every page, its search index and its plots."""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from pydantic import create_model

from aimlutils.hyper_opt.api import read_config
from aimlutils.hyper_opt.cli import parse_args
from aimlutils.hyper_opt.config import reference
from aimlutils.hyper_opt.config.run_config import schema_model
from aimlutils.hyper_opt.config.schema import OptunaSection
from aimlutils.hyper_opt.report._style import load_style
from aimlutils.hyper_opt.search_space.markers import has_markers
from tests.conftest import ROOT

DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(kind: str) -> list[tuple[str, str]]:
    """``(where, code)`` of every fenced block of ``kind`` in the docs and the README."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            if match.group(1) == kind:
                line = text[: match.start()].count("\n") + 1
                found.append((f"{page.relative_to(ROOT)}:{line}", match.group(2)))
    return found


# -- the hyper.yml reference ---------------------------------------------------------------------


def test_every_schema_key_is_in_the_reference_and_every_reference_key_in_the_schema():
    assert reference.undocumented() == []
    assert reference.unknown() == []


def test_a_key_added_to_the_schema_without_its_line_fails_the_check():
    section = create_model("OptunaWithMore", __base__=OptunaSection, new_knob=(int, 0))
    model = create_model("HyperWithMore", __base__=schema_model(), optuna=(section, ...), extra_top=(str, ""))
    assert sorted(reference.undocumented(model)) == ["extra_top", "optuna.new_knob"]


def test_the_reference_page_is_made_from_the_key_list():
    page = (DOCS / "reference" / "hyper-yml.md").read_text()
    assert "<!-- hyper-yml-keys -->" in page and "| `optuna." not in page  # no hand-kept table


# -- the examples ---------------------------------------------------------------------------------

MODEL = {
    "model": {"dense_hidden_dims": [8], "dropout": 0.0},
    "optimizer": {"learning_rate": 0.001},
    "trainer": {"epochs": 3},
}


def _study_folder(folder: Path, objective: str, **optuna_keys: Any) -> tuple[Path, Path]:
    (folder / "objective.py").write_text(objective)
    hyper = {
        "log": True,
        "optuna": {
            "name": "docs-example",
            "objective": "objective.py",
            "metric": "val_loss",
            "direction": "minimize",
            "n_trials": 3,
            "save_path": "results",
            "parameters": {
                "optimizer:learning_rate": {
                    "type": "loguniform",
                    "settings": {"name": "lr", "low": 1.0e-5, "high": 1.0e-2},
                }
            },
            **optuna_keys,
        },
    }
    (folder / "hyper.yml").write_text(yaml.safe_dump(hyper))
    (folder / "model.yml").write_text(yaml.safe_dump(MODEL))
    return folder / "hyper.yml", folder / "model.yml"


#: Scripts that drive a study from Python (the API page's); every other example is an objective.py.
SCRIPTS = [(where, code) for where, code in blocks("python") if "import submitit" in code]
OBJECTIVES = [b for b in blocks("python") if b not in SCRIPTS and "class Objective(BaseObjective)" in b[1]]


def test_every_python_example_is_an_objective_or_a_script_that_runs():
    assert len(OBJECTIVES) >= 5 and len(SCRIPTS) >= 1, [w for w, _ in blocks("python")]
    assert {w for w, _ in OBJECTIVES + SCRIPTS} == {w for w, _ in blocks("python")}


@pytest.mark.parametrize(("where", "code"), OBJECTIVES, ids=[w for w, _ in OBJECTIVES])
def test_each_objective_example_runs_a_study(tmp_path, where, code):
    if "import torch" in code:
        pytest.importorskip("torch")
    extra = {"mlflow": {}} if "mlflow" in code else {}
    hyper, model = _study_folder(tmp_path, code)
    if extra:
        data = yaml.safe_load(hyper.read_text())
        hyper.write_text(yaml.safe_dump({**data, **extra}))
    run = subprocess.run(
        [sys.executable, str(ROOT / "optimize.py"), str(hyper), str(model), "--workers", "1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "MLFLOW_ALLOW_FILE_STORE": "true"},
    )
    assert run.returncode == 0, f"{where}\n{run.stdout}\n{run.stderr}"
    cfg = read_config(hyper, model, base_dir=tmp_path)
    study = optuna.load_study(
        study_name=cfg.study_name,
        storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(cfg.storage.url())),
    )
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 3, (where, states)


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
@pytest.mark.parametrize(("where", "code"), SCRIPTS, ids=[w for w, _ in SCRIPTS])
def test_the_python_api_example_runs_here_and_on_the_test_cluster(tmp_path, where, code):
    hyper, _ = _study_folder(tmp_path, "")
    data = yaml.safe_load(hyper.read_text())
    del data["optuna"]["objective"]  # the example brings its class
    hyper.write_text(yaml.safe_dump(data))
    (tmp_path / "objective.py").unlink()
    (tmp_path / "example.py").write_text(code)
    run = subprocess.run(
        [sys.executable, "example.py"], capture_output=True, text=True, cwd=tmp_path, timeout=600
    )
    assert run.returncode == 0, f"{where}\n{run.stdout}\n{run.stderr}"
    assert "'lr'" in run.stdout, run.stdout  # study.best_params was printed
    csv = (tmp_path / "results" / "trial_results.csv").read_text().splitlines()
    assert len(csv) - 1 == 13, csv  # 3, then 8, 12 and 13 trials in all


def _model_for(hyper: dict[str, Any]) -> dict[str, Any]:
    """A model config holding every colon path the example's parameters name."""
    model: dict[str, Any] = json.loads(json.dumps(MODEL))
    for key in (hyper.get("optuna") or {}).get("parameters") or {}:
        if ":" in key:
            node = model
            *parents, leaf = key.split(":")
            for part in parents:
                node = node.setdefault(part, {})
            node.setdefault(leaf, 0.1)
    return model


@pytest.mark.parametrize(("where", "code"), blocks("yaml"), ids=[w for w, _ in blocks("yaml")])
def test_each_yaml_example_is_valid(tmp_path, where, code):
    data = yaml.safe_load(code)
    assert isinstance(data, dict), where
    base = yaml.safe_load(_study_folder(tmp_path, "")[0].read_text())
    if "parameters" in data and "optuna" not in data:  # the search space of optuna.parameters
        data = {"optuna": {k: v for k, v in data.items()}}
    top = set(schema_model().model_fields)
    if not set(data) <= top:
        # Not a hyper.yml: the report's style file, or a model.yml with inline markers.
        if "model" in data:
            assert has_markers(data), where
        else:
            style = tmp_path / "style.yml"
            style.write_text(code)
            load_style(style)
        return
    merged = {**base, **data, "optuna": {**base["optuna"], **(data.get("optuna") or {})}}
    if "objective" in (data.get("optuna") or {}):
        merged["optuna"]["objective"] = data["optuna"]["objective"]
    if isinstance(merged["optuna"].get("objective"), str):
        merged["optuna"]["objective"] = str(tmp_path / "objective.py")
        (tmp_path / "objective.py").write_text(OBJECTIVES[0][1])
    if merged.get("mlflow"):
        merged["mlflow"] = {**merged["mlflow"], "tracking_uri": None}
    read_config(merged, _model_for(merged), base_dir=tmp_path)


# -- the built site -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("mkdocs") is None:
        pytest.fail("mkdocs is not installed: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    built = subprocess.run(
        ["mkdocs", "build", "--strict", "-d", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert built.returncode == 0, built.stdout + built.stderr
    return out


def test_the_site_has_every_page_in_its_search_index(site):
    index = json.loads((site / "search" / "search_index.json").read_text())
    found = {doc["location"].split("#")[0] for doc in index["docs"]}
    pages = {str(p.relative_to(DOCS).with_suffix("")) + "/" for p in DOCS.rglob("*.md")}
    pages = {"" if p == "index/" else p for p in pages}
    assert pages <= found, sorted(pages - found)
    text = " ".join(doc["text"] for doc in index["docs"])
    for word in ("readable_by", "TorchCheckpoint", "GrpcStorageProxy", "n_trials"):
        assert word in text, word


def test_the_reference_page_lists_every_key_and_the_benchmarks_page_its_plots(site):
    page = (site / "reference" / "hyper-yml" / "index.html").read_text()
    for key in reference.KEYS:
        assert key.replace("<", "&lt;").replace(">", "&gt;") in page, key
    benchmarks = (site / "benchmarks" / "index.html").read_text()
    plots = re.findall(r'src="\.\./([^"]+\.png)"', benchmarks)
    assert len(plots) >= 5 and all((site / p).is_file() for p in plots), plots
    api = (site / "reference" / "api" / "index.html").read_text()
    assert "TorchCheckpoint" in api and "def optimize" not in api and "optimize" in api


def test_the_readme_is_short_and_gives_the_ci_test_command():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in readme, ci


def _command_lines() -> list[tuple[str, str]]:
    """``(where, line)`` of each ``python optimize.py`` command in the docs' shell blocks (a
    synopsis with ``[...]`` left out), its comment cut."""
    found = []
    for where, code in blocks(""):
        for line in code.replace("\\\n", " ").splitlines():  # a command continued with \
            command = line.split("  #", 1)[0].strip()
            for part in command.split(" && "):
                if part.startswith("python optimize.py ") and "[" not in part:
                    found.append((where, part))
    return found


def test_each_command_in_the_docs_parses_as_the_command_line_takes_it():
    lines = _command_lines()
    assert len(lines) >= 15, lines
    for where, line in lines:
        argv = shlex.split(line)[2:]
        try:
            parse_args(argv)
        except SystemExit:
            pytest.fail(f"{where}: {line!r} is not a valid command line")


def test_each_extra_the_docs_install_exists():
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "setup.cfg")
    extras = set(parser["options.extras_require"])
    named = {
        name.strip()
        for _, code in blocks("")
        for group in re.findall(r'-e "\.\[([a-z,]+)\]"', code)
        for name in group.split(",")
    }
    assert named and named <= extras, named - extras

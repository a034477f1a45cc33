"""The shipped examples run as the README says, on this machine's CPUs."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import needs_module

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("example", "module"), [("torch", "torch"), ("keras", "tensorflow")])
def test_example_finishes_its_20_trials_with_pruning(tmp_path, example, module):
    needs_module(module)
    hyper = yaml.safe_load((ROOT / f"examples/{example}/hyper.yml").read_text())
    hyper["optuna"]["save_path"] = str(tmp_path / "results")
    hyper["log"]["save_path"] = str(tmp_path / "results/log.txt")
    (tmp_path / "hyper.yml").write_text(yaml.safe_dump(hyper, sort_keys=False))
    proc = subprocess.run(
        [sys.executable, "optimize.py", str(tmp_path / "hyper.yml"), f"examples/{example}/model.yml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "20/20 done" in proc.stdout
    with open(tmp_path / "results/trial_results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 20
    assert {r["state"] for r in rows} <= {"COMPLETE", "PRUNED"}
    assert any(r["state"] == "PRUNED" for r in rows)
    completed = [r for r in rows if r["state"] == "COMPLETE"]
    assert min(float(r["val_loss"]) for r in completed) < 0.3  # a real model learned something
    assert max(float(r["val_accuracy"]) for r in completed) > 0.9

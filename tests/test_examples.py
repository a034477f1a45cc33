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

# Trials that make a pruned one certain, whatever the sampler draws and however the two workers
# interleave. Four good ones run first; the fifth can start only when three of them have
# finished, and so at least three are COMPLETE then (a pruned one means three had completed
# before). That is the MedianPruner's n_startup_trials, so from its third epoch (n_warmup_steps)
# the fifth is compared with their median: at the lowest learning rate, with heavy dropout and
# big batches, its loss has hardly moved while theirs has fallen far.
GOOD = [{"num_dense": 1, "dropout": 0.0, "lr": lr, "batch_size": 32} for lr in (0.003, 0.005, 0.01, 0.02)]
HOPELESS = {"num_dense": 1, "dropout": 0.5, "lr": 1.0e-4, "batch_size": 128}


@pytest.mark.parametrize(("example", "module"), [("torch", "torch"), ("keras", "tensorflow")])
def test_example_finishes_its_20_trials_with_pruning(tmp_path, example, module):
    needs_module(module)
    hyper = yaml.safe_load((ROOT / f"examples/{example}/hyper.yml").read_text())
    hyper["optuna"]["save_path"] = str(tmp_path / "results")
    hyper["log"]["save_path"] = str(tmp_path / "results/log.txt")
    hyper["optuna"]["enqueue"] = [*GOOD, HOPELESS]
    (tmp_path / "hyper.yml").write_text(yaml.safe_dump(hyper, sort_keys=False))
    # Two workers, as on a machine without GPUs; the argument above needs no more than two.
    args = [str(tmp_path / "hyper.yml"), f"examples/{example}/model.yml", "--workers", "2"]
    proc = subprocess.run(
        [sys.executable, "optimize.py", *args],
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
    (hopeless,) = [r for r in rows if float(r["lr"]) == HOPELESS["lr"] and r["batch_size"] == "128"]
    assert hopeless["state"] == "PRUNED", hopeless
    completed = [r for r in rows if r["state"] == "COMPLETE"]
    assert min(float(r["val_loss"]) for r in completed) < 0.3  # a real model learned something
    assert max(float(r["val_accuracy"]) for r in completed) > 0.9

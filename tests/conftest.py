"""Shared fixtures: study files in a temporary directory, and the real database services."""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

SERVICES = {
    "postgresql": ("127.0.0.1", 5432, "postgresql://postgres@127.0.0.1:5432/test"),
    "mysql": ("127.0.0.1", 3306, "mysql://root@127.0.0.1:3306/test"),
    "redis": ("127.0.0.1", 6379, "redis://127.0.0.1:6379/0"),
}

# An objective for tests: a quadratic in the tuned values, with knobs read from the model config.
OBJECTIVE = textwrap.dedent(
    """
    import json, math, os, time
    from aimlutils.hyper_opt.base_objective import *

    def custom_updates(trial, conf):
        if "num_dense" in conf["optuna"]["parameters"]:
            n = trial.suggest_int("num_dense", 0, 10)
            conf["model"]["dense_hidden_dims"] = [8] * n
        return conf

    # Say "inside trial N" with a file, then wait there until the file `release` appears.
    def hold(trial, folder, identity):
        marker = os.path.join(folder, f"{trial.number}.json")
        with open(marker + ".tmp", "w") as fh:
            json.dump(dict(identity or {}, trial=trial.number), fh)
        os.replace(marker + ".tmp", marker)
        while not os.path.exists(os.path.join(folder, "release")):
            time.sleep(0.05)

    class Objective(BaseObjective):
        def __init__(self, study, config, metric="val_loss", device="cpu"):
            BaseObjective.__init__(self, study, config, metric, device)

        def train(self, trial, conf):
            test = conf.get("test", {})
            x = conf["optimizer"]["learning_rate"]
            if test.get("fail_on") is not None and trial.number % test["fail_on"] == 0:
                raise RuntimeError("boom on purpose")
            if test.get("hold_from", 0) <= trial.number < test.get("hold_trials", 0):
                hold(trial, test["hold_dir"], self.worker_identity)
            sleep = test.get("sleep", 0.0)
            retry = test.get("fast_retries") and "retry_of" in trial.user_attrs
            if trial.number < test.get("fast_trials", 0) or retry:
                sleep = 0.0
            for step in range(test.get("steps", 1)):
                time.sleep(sleep)
                trial.report(x + 1.0 / (step + 1), step)
                if trial.should_prune():
                    raise optuna.TrialPruned()
            if test.get("return_nan") and trial.number % 2 == 0:
                return {"val_loss": float("nan")}
            return {
                "val_loss": (x - 0.3) ** 2,
                "lr_seen": x,
                "hidden_seen": len(conf["model"].get("dense_hidden_dims", [])),
                "device_seen": self.device,
                "gpu_seen": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
                "gpus_seen": self.gpus,
            }
    """
)


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def needs_module(name: str) -> None:
    """Skip a test whose optional package is missing; under CI, where it is installed, fail."""
    try:
        importlib.import_module(name)
    except ImportError as err:
        if under_ci():
            pytest.fail(f"{name} is not installed: {err}")
        pytest.skip(f"needs {name}")


def service_url(kind: str) -> str:
    """The URL of a real service, or fail (under CI) / skip (elsewhere) when it is unreachable."""
    host, port, url = SERVICES[kind]
    try:
        with socket.create_connection((host, port), timeout=2):
            return url
    except OSError as err:
        message = f"{kind} is not reachable on {host}:{port}: {err}"
        if under_ci():
            pytest.fail(message)
        pytest.skip(message)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own, which reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Two lanes under pytest-xdist's ``--dist loadgroup`` (the test command's ``-n 2``): the
    SLURM tests, which mostly wait for the test cluster, in one; every other test in the other."""
    for item in items:
        lane = "cluster" if item.get_closest_marker("slurm") else "main"
        item.add_marker(pytest.mark.xdist_group(lane))


ROOT = Path(__file__).resolve().parents[1]


def run_optimize(
    hyper: Path, model: Path, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``optimize.py hyper.yml model.yml ARGS`` as a user runs it, from hyper.yml's directory."""
    return subprocess.run(
        [sys.executable, str(ROOT / "optimize.py"), str(hyper), str(model), *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=hyper.parent,
        env=env,
        timeout=300,
    )


CLUSTER_SCRIPT = ROOT / "scripts" / "slurm-test-cluster.sh"


def cluster(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``scripts/slurm-test-cluster.sh ARGS`` (it must succeed)."""
    command = ["bash", str(CLUSTER_SCRIPT), *args]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"slurm-test-cluster.sh {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def node_pid(node: str, pid: int) -> int:
    """The pid here of process ``pid`` of test-cluster node ``node``, which has a PID namespace of
    its own (the pid a worker there records is the pid in that namespace)."""
    init = int(cluster("node-pid", node).stdout)
    namespace = os.readlink(f"/proc/{init}/ns/pid")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns/pid") != namespace:
                continue
            status = (entry / "status").read_text()
        except OSError:
            continue
        nspid = next(line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:"))
        if int(nspid[-1]) == pid:
            return int(entry.name)
    raise LookupError(f"no process {pid} on {node}")


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """The project's 2-node test cluster, started if it is not running (fails under CI if it can't)."""
    proc = subprocess.run(["bash", str(CLUSTER_SCRIPT), "start"], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        message = f"the SLURM test cluster did not start:\n{proc.stdout}\n{proc.stderr}"
        if under_ci():
            pytest.fail(message)
        pytest.skip(message)


class Held:
    """Trials that wait inside the objective until released: the test's handle on "mid-trial".

    With ``test={"hold_trials": N, "hold_dir": str(held.folder)}`` each trial numbered below N
    (and from ``hold_from`` on, 0 unless given) writes ``<number>.json`` (its worker's identity:
    host, pid, job id) once it is inside the objective, then waits until :meth:`release`. A trial
    found here is running *now*, whatever the machine's load, so a test can kill its worker or
    cancel its job mid-trial.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def knobs(self, n: int, first: int = 0) -> dict[str, Any]:
        """The objective's knobs that hold trials ``first`` to ``n - 1``."""
        return {"hold_from": first, "hold_trials": n, "hold_dir": str(self.folder)}

    def inside(self) -> dict[int, dict[str, Any]]:
        """``{trial number: worker identity}`` of the trials that reached the objective."""
        return {int(p.stem): json.loads(p.read_text()) for p in self.folder.glob("*.json")}

    def wait(self, n: int, timeout: float = 120) -> dict[int, dict[str, Any]]:
        """Wait until ``n`` trials are inside (a guard, not a measure: ``timeout`` is generous)."""
        deadline = time.monotonic() + timeout
        while len(found := self.inside()) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(found)} of {n} trials reached the objective: {found}")
            time.sleep(0.1)
        return found

    def release(self) -> None:
        (self.folder / "release").touch()


@pytest.fixture
def held(tmp_path: Path) -> Held:
    return Held(tmp_path / "held")


def hyper_config(save_path: Path, objective: Path, **optuna: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "name": f"study-{uuid.uuid4().hex[:8]}",
        "reload": 0,
        "objective": str(objective),
        "metric": "val_loss",
        "direction": "minimize",
        "n_trials": 6,
        "gpu": False,
        "save_path": str(save_path),
        "sampler": {"type": "RandomSampler"},
        "parameters": {
            "optimizer:learning_rate": {
                "type": "float",
                "settings": {"name": "lr", "low": 0.0, "high": 1.0},
            }
        },
    }
    section.update(optuna)
    return {"log": {"save_path": str(save_path / "log.txt")}, "optuna": section}


MODEL = {
    "model": {"dense_hidden_dims": [1000], "dense_dropouts": [0.0]},
    "optimizer": {"type": "adam", "learning_rate": 0.001, "weight_decay": 0.0},
    "trainer": {"epochs": 1},
}


@pytest.fixture
def study_files(tmp_path: Path) -> Callable[..., tuple[Path, Path]]:
    """Write ``hyper.yml``, ``model.yml`` and ``objective.py``; keyword arguments go to ``optuna``.

    ``test=`` sets the objective's knobs (``sleep``, ``steps``, ``fail_on``, ``return_nan``,
    ``fast_trials``, ``fast_retries``, ``hold_trials`` with ``hold_dir`` and ``hold_from``: see
    :class:`Held`);
    ``sections=`` adds top-level sections (``slurm``, ``pbs``).
    """

    def make(
        test: dict[str, Any] | None = None,
        hyper: dict[str, Any] | None = None,
        sections: dict[str, Any] | None = None,
        **optuna: Any,
    ) -> tuple[Path, Path]:
        objective = tmp_path / "objective.py"
        objective.write_text(OBJECTIVE)
        data = hyper or hyper_config(tmp_path / "results", objective, **optuna)
        data.update(sections or {})
        model = dict(MODEL, test=test or {})
        hyper_path, model_path = tmp_path / "hyper.yml", tmp_path / "model.yml"
        hyper_path.write_text(yaml.safe_dump(data, sort_keys=False))
        model_path.write_text(yaml.safe_dump(model, sort_keys=False))
        return hyper_path, model_path

    return make

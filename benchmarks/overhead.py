"""Trials per second of the full worker path against plain ``study.optimize``, same storage.

Both sides run a null objective over the same three parameters (one of them written into the
model config by colon path) with the same sampler. The worker side adds everything a real run
does: the checked config, the user's Objective class, colon-path updates and custom_updates, the
budget check, the worker's trial attributes and the CSV row.

    python benchmarks/overhead.py [--trials 1000] [--output docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import tempfile
import time
from pathlib import Path

import optuna
import yaml

# Run as a script, so this folder is on sys.path.
from _doc import write_section

from aimlutils.hyper_opt.config import load_config
from aimlutils.hyper_opt.storage import open_storage, parse_storage
from aimlutils.hyper_opt.study import create_or_load
from aimlutils.hyper_opt.worker import Worker

OBJECTIVE = """
from aimlutils.hyper_opt.base_objective import *

def custom_updates(trial, conf):
    conf["model"]["layers"] = [16] * conf["model"]["num_layers"]
    return conf

class Objective(BaseObjective):
    def __init__(self, study, config, metric="val_loss", device="cpu"):
        BaseObjective.__init__(self, study, config, metric, device)

    def train(self, trial, conf):
        return {"val_loss": conf["optimizer"]["learning_rate"] + conf["model"]["dropout"], "acc": 0.5}
"""

PARAMETERS = {
    "optimizer:learning_rate": {"type": "loguniform", "settings": {"name": "lr", "low": 1e-5, "high": 1e-1}},
    "model:dropout": {"type": "float", "settings": {"name": "dropout", "low": 0.0, "high": 0.5}},
    "model:num_layers": {"type": "int", "settings": {"name": "num_layers", "low": 1, "high": 4}},
}
MODEL = {"model": {"dropout": 0.1, "num_layers": 2}, "optimizer": {"learning_rate": 0.001}}


def plain_optuna(storage_url: str | None, folder: Path, n_trials: int) -> float:
    """Trials per second of plain Optuna with a null objective."""
    spec = parse_storage(storage_url, None, folder, folder)
    study = optuna.create_study(
        study_name="plain", storage=open_storage(spec), sampler=optuna.samplers.RandomSampler(seed=0)
    )

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        dropout = trial.suggest_float("dropout", 0.0, 0.5)
        trial.suggest_int("num_layers", 1, 4)
        return lr + dropout

    start = time.perf_counter()
    study.optimize(objective, n_trials=n_trials)
    return n_trials / (time.perf_counter() - start)


def full_worker(storage_url: str | None, folder: Path, n_trials: int) -> float:
    """Trials per second of one worker running the same study through the package."""
    (folder / "objective.py").write_text(OBJECTIVE)
    hyper = {
        "optuna": {
            "name": "worker",
            "objective": str(folder / "objective.py"),
            "metric": "val_loss",
            "direction": "minimize",
            "n_trials": n_trials,
            "save_path": str(folder),
            "sampler": {"type": "RandomSampler", "seed": 0},
            "parameters": PARAMETERS,
            **({"storage": storage_url} if storage_url else {}),
        }
    }
    (folder / "hyper.yml").write_text(yaml.safe_dump(hyper))
    (folder / "model.yml").write_text(yaml.safe_dump(MODEL))
    cfg = load_config(folder / "hyper.yml", folder / "model.yml")
    create_or_load(cfg, open_storage(cfg.storage), 1)
    worker = Worker(cfg)
    start = time.perf_counter()
    ran = worker.run()
    elapsed = time.perf_counter() - start
    assert ran == n_trials and len(cfg.csv_path.read_text().splitlines()) == n_trials + 1
    return n_trials / elapsed


def measure(kind: str, n_trials: int, repeats: int) -> tuple[float, float]:
    """Best-of-``repeats`` trials per second for (plain Optuna, worker path)."""
    plain, ours = [], []
    for _ in range(repeats):
        for runner, out in ((plain_optuna, plain), (full_worker, ours)):
            with tempfile.TemporaryDirectory() as tmp:
                url = None if kind == "journal file" else f"sqlite:///{tmp}/study.db"
                out.append(runner(url, Path(tmp), n_trials))
    return max(plain), max(ours)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks.md"))
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    for kind in ("journal file", "sqlite"):
        plain, ours = measure(kind, args.trials, args.repeats)
        rows.append(f"| {kind} | {args.trials} | {plain:.1f} | {ours:.1f} | {ours / plain:.2f} |")
        print(rows[-1], flush=True)
    table = "\n".join(
        [
            "| storage | trials | plain Optuna (trials/s) | aimlutils worker (trials/s) | ratio |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )
    text = (
        "## Worker overhead against plain Optuna\n\n"
        "`python benchmarks/overhead.py` runs a null objective over three parameters (RandomSampler,\n"
        "one worker) through plain `study.optimize` and through the full worker path (checked config,\n"
        "the user's `Objective` class, colon-path updates, `custom_updates`, the `n_trials` budget\n"
        "check under its lock, trial attributes, one CSV row per trial), on the same storage, in the\n"
        f"same run; best of {args.repeats}. The target is a ratio of at least 0.8 on the journal file.\n\n"
        f"{table}\n\n"
        f"Measured {datetime.date.today()} on {platform.machine()}, Python {platform.python_version()}, "
        f"Optuna {optuna.__version__}, {_cpus()} CPU cores.\n"
    )
    write_section(args.output, "overhead", text)


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()

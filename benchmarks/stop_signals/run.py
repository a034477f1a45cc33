"""A signal to optimize.py only, with 100 local workers: how many workers are left 30 s later.

The scene of the report that asked for it: ``--workers 100``, 20 s trials, the journal file;
25 s after the start, SIGTERM, SIGHUP or SIGKILL to the optimize.py process alone (not its
group), while many workers are still starting. Then the study is reloaded (with instant trials
and 8 workers, to be quick) and must end at exactly ``n_trials`` with no trial left RUNNING.

    python -m benchmarks.stop_signals [--workers 100] [--output docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import optuna
import yaml

from aimlutils.hyper_opt.config import load_config
from aimlutils.hyper_opt.storage import open_storage
from benchmarks.common.doc import write_section

ROOT = Path(__file__).resolve().parents[2]
OBJECTIVE = textwrap.dedent(
    """
    import time
    from aimlutils.hyper_opt.base_objective import *

    class Objective(BaseObjective):
        def __init__(self, study, config, metric="val_loss", device="cpu"):
            BaseObjective.__init__(self, study, config, metric, device)

        def train(self, trial, conf):
            x = conf["optimizer"]["learning_rate"]
            for step in range(conf["test"]["steps"]):
                time.sleep(conf["test"]["sleep"])
                trial.report(x, step)
            return {"val_loss": (x - 0.3) ** 2}
    """
)


def worker_pids(save_path: Path) -> list[int]:
    """Live (not zombie) worker processes of the study in ``save_path``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, IndexError):
            continue
        if state != "Z" and "aimlutils.hyper_opt.worker" in argv and any(str(save_path) in a for a in argv):
            pids.append(int(entry.name))
    return pids


def counts(hyper: Path, model: Path) -> dict[str, int]:
    cfg = load_config(hyper, model, base_dir=hyper.parent)
    study = optuna.load_study(study_name=cfg.study_name, storage=open_storage(cfg.storage))
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def optimize(hyper: Path, model: Path, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "optimize.py"), str(hyper), str(model), *args]


def one(signum: signal.Signals, folder: Path, workers: int, n_trials: int, after_s: float) -> str:
    (folder / "objective.py").write_text(OBJECTIVE)
    hyper, model = folder / "hyper.yml", folder / "model.yml"
    save_path = folder / "results"
    hyper.write_text(
        yaml.safe_dump(
            {
                "optuna": {
                    "name": f"stop-{signum.name}",
                    "objective": str(folder / "objective.py"),
                    "metric": "val_loss",
                    "direction": "minimize",
                    "n_trials": n_trials,
                    "save_path": str(save_path),
                    "sampler": {"type": "RandomSampler"},
                    "parameters": {
                        "optimizer:learning_rate": {
                            "type": "float",
                            "settings": {"name": "lr", "low": 0.0, "high": 1.0},
                        }
                    },
                }
            }
        )
    )
    model_data = {"optimizer": {"learning_rate": 0.1}, "test": {"sleep": 2.0, "steps": 10}}  # 20 s
    model.write_text(yaml.safe_dump(model_data))
    proc = subprocess.Popen(
        optimize(hyper, model, "--workers", str(workers)),
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the signal goes to optimize.py only, never to a group
    )
    time.sleep(after_s)
    alive = worker_pids(save_path)
    running = save_path / "running"
    in_trial = len(list(running.iterdir())) if running.is_dir() else 0
    os.kill(proc.pid, signum)
    sent = time.monotonic()
    gone_s = None
    while time.monotonic() - sent < 30:
        proc.poll()  # reaps optimize.py once it exits
        if gone_s is None and not worker_pids(save_path):
            gone_s = time.monotonic() - sent
        time.sleep(0.25)
    left_at_30 = len(worker_pids(save_path))
    code = proc.wait(timeout=60)
    before = counts(hyper, model)
    model_data["test"] = {"sleep": 0.0, "steps": 1}
    model.write_text(yaml.safe_dump(model_data))
    reload = optimize(hyper, model, "--reload", "--workers", "8")
    again = subprocess.run(reload, cwd=folder, capture_output=True, text=True)
    after = counts(hyper, model)
    done = after.get("COMPLETE", 0) + after.get("PRUNED", 0)
    exact = again.returncode == 0 and done == n_trials and "RUNNING" not in after
    gone = f"{gone_s:.1f} s" if gone_s is not None else "not within 30 s"
    line = (
        f"| {signum.name} | {len(alive)} ({in_trial} in a trial) | {code} | {gone} | {left_at_30} | "
        f"{before.get('RUNNING', 0)} | {done} of {n_trials}{'' if exact else ' (NOT exact)'} |"
    )
    print(line, flush=True)
    return line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.stop_signals", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--workers", type=int, default=100)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--after", type=float, default=25.0, help="seconds from start to the signal")
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks.md"))
    args = parser.parse_args(argv)
    # Started under nohup, optimize.py would inherit an ignored SIGHUP and rightly keep it so.
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    rows = []
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGKILL):
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(one(signum, Path(tmp), args.workers, args.trials, args.after))
    text = (
        "## Stopping a local run\n\n"
        f"`python -m benchmarks.stop_signals`: `--workers {args.workers}`, 20 s trials, the journal file; "
        f"{args.after:.0f} s after\n"
        "the start, one signal to the optimize.py process only (not its group), while the workers not yet\n"
        "in a trial are still starting up. Workers are counted from `/proc` every 0.25 s (zombies left\n"
        "out); then `--reload` (instant trials, 8 workers) finishes the study.\n\n"
        "| signal | workers alive at the signal | optimize.py exit | all workers gone after | "
        "workers left 30 s later | trials left RUNNING | reload: COMPLETE + PRUNED |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        f"Measured {datetime.date.today()}, Python {sys.version.split()[0]}, Optuna {optuna.__version__}, "
        f"{len(os.sched_getaffinity(0))} CPU cores.\n"
    )
    write_section(args.output, "stop", text)
    return 0

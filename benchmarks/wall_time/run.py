"""GPU time lost at jobs' time limits, with ``optuna.fit_wall_time`` on and off, on a real SLURM
cluster (scripts/slurm-test-cluster.sh).

Four studies run at once, alike but for the switch and for the warning before the time limit
(the default, a quarter of a 2-minute limit: 30 s, which Slurm may send up to a minute early; or
none, ``stop_warning_s: 0``): one job each of ``--workers`` workers (one fake GPU each) with a
``--minutes`` time limit. A trial sets up for ``--startup-s`` seconds, then trains ``--epochs``
epochs, each of the length ``--epoch-s`` gives its chain of continued trials in turn; after each
epoch it reports, saves a checkpoint (and says so: ``self.checkpoint_saved()``) and leaves if asked
to (``self.stop_if_requested()``). A job puts itself back in the queue until its study has
``n_trials`` (one trial per worker) complete.

Lost: in each trial stopped at a time limit, the time after its last checkpoint, or all of it
when it saved none, as the trials' own records (``timing``) say.

    python -m benchmarks.wall_time [--output docs/benchmarks.md] [--smoke]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from aimlutils.hyper_opt.config import load_config
from aimlutils.hyper_opt.coordination import read_record
from aimlutils.hyper_opt.storage import open_storage
from benchmarks.common.doc import write_section

ROOT = Path(__file__).resolve().parents[2]
OBJECTIVE = textwrap.dedent(
    """
    import json, os, time
    from aimlutils.hyper_opt.base_objective import *

    class Objective(BaseObjective):
        def train(self, trial, conf):
            test = conf["test"]
            folder = self.checkpoint_dir(trial)
            chain = int(folder.name.rpartition("_")[2])
            epoch_s = test["epoch_s"][chain % len(test["epoch_s"])]
            state = folder / "state.json"
            start = json.loads(state.read_text())["epoch"] + 1 if state.exists() else 0
            time.sleep(test["startup_s"])  # data, model, restore
            for epoch in range(start, test["epochs"]):
                time.sleep(epoch_s)
                trial.report(float(epoch), epoch)
                (folder / "state.tmp").write_text(json.dumps({"epoch": epoch}))
                os.replace(folder / "state.tmp", state)
                self.checkpoint_saved()
                if epoch + 1 < test["epochs"]:
                    self.stop_if_requested()
            return {"val_loss": (conf["optimizer"]["learning_rate"] - 0.3) ** 2}
    """
)


@dataclasses.dataclass(frozen=True)
class Setup:
    workers: int = 2
    minutes: int = 2
    startup_s: float = 5.0
    epochs: int = 3
    epoch_s: tuple[float, ...] = (40.0, 70.0)


SMOKE = Setup(workers=2, minutes=1, startup_s=1.0, epochs=2, epoch_s=(1.0, 2.0))

#: The studies: (the warning before the limit: the default, or none; ``fit_wall_time``).
CASES = [(warning, fit) for warning in (True, False) for fit in (False, True)]


def _label(case: tuple[bool, bool]) -> str:
    warning, fit = case
    return f"{'default' if warning else 'none'}/{str(fit).lower()}"


def _files(folder: Path, setup: Setup, case: tuple[bool, bool]) -> tuple[Path, Path]:
    warning, fit = case
    folder.mkdir(parents=True)
    (folder / "objective.py").write_text(OBJECTIVE)
    hyper = {
        "log": {"save_path": str(folder / "results" / "log.txt")},
        "optuna": {
            "name": f"wall-time-{_label(case).replace('/', '-')}",
            "objective": str(folder / "objective.py"),
            "n_trials": setup.workers,
            "gpu": True,
            "save_path": str(folder / "results"),
            "sampler": {"type": "RandomSampler"},
            "parameters": {
                "optimizer:learning_rate": {
                    "type": "float",
                    "settings": {"name": "lr", "low": 0.0, "high": 1.0},
                }
            },
            "fit_wall_time": fit,
        },
        "slurm": {
            "jobs": 1,
            "gpus_per_node": setup.workers,
            "batch": {"gres": f"gpu:{setup.workers}", "t": str(setup.minutes)},
            **({} if warning else {"stop_warning_s": 0}),
        },
    }
    test = {"startup_s": setup.startup_s, "epochs": setup.epochs, "epoch_s": list(setup.epoch_s)}
    model = {"optimizer": {"learning_rate": 0.1}, "test": test}
    (folder / "hyper.yml").write_text(yaml.safe_dump(hyper, sort_keys=False))
    (folder / "model.yml").write_text(yaml.safe_dump(model, sort_keys=False))
    return folder / "hyper.yml", folder / "model.yml"


def _optimize(hyper: Path, model: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(ROOT / "optimize.py"), *args, str(hyper), str(model)]
    return subprocess.run(argv, capture_output=True, text=True, cwd=hyper.parent, timeout=300, check=False)


def _job_ids(save_path: Path) -> list[str]:
    path = save_path / "jobs.json"
    return [str(job["job_id"]) for job in json.loads(path.read_text())] if path.exists() else []


def _queued(ids: Sequence[str]) -> bool:
    proc = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return True  # a busy controller: ask again
    return any(j.split("_")[0] in ids for j in proc.stdout.split())


def measure(hyper: Path, model: Path, wall_s: float) -> dict[str, Any]:
    """Lost and used trial time of the study in ``hyper``, from its trials' records."""
    cfg = load_config(hyper, model, base_dir=hyper.parent)
    study = optuna.load_study(study_name=cfg.study_name, storage=open_storage(cfg.storage))
    out: dict[str, Any] = {"wall_s": wall_s, "trial_s": 0.0, "lost_after_s": 0.0, "lost_none_s": 0.0}
    out.update(complete=0, at_checkpoint=0, cut=0, unrecorded=0, runs=1)
    for trial in study.get_trials(deepcopy=False):
        record = read_record(trial)
        out["runs"] = max(out["runs"], int((record.get("worker") or {}).get("restarts") or 0) + 1)
        timing = record.get("timing")
        if trial.state == TrialState.COMPLETE:
            out["complete"] += 1
        if not isinstance(timing, dict):
            out["unrecorded"] += trial.state == TrialState.FAIL  # killed: no record of its own
            continue
        out["trial_s"] += float(timing["ran_s"])
        reason = str(record.get("fail_reason") or "")
        if trial.state != TrialState.FAIL or not reason.startswith("interrupted"):
            continue
        if "stopped at a checkpoint" in reason:
            out["at_checkpoint"] += 1
        else:
            out["cut"] += 1
        last = timing.get("last_s")
        if last is None:
            out["lost_none_s"] += float(timing["ran_s"])
        else:
            out["lost_after_s"] += float(timing["ran_s"]) - float(last)
    return out


def run(setup: Setup, folder: Path, timeout_s: float) -> dict[str, dict[str, Any]]:
    """The studies at once; their measures, by :func:`_label`."""
    files = {_label(case): _files(folder / _label(case).replace("/", "-"), setup, case) for case in CASES}
    started = time.monotonic()
    for hyper, model in files.values():
        proc = _optimize(hyper, model)
        if proc.returncode != 0:
            raise RuntimeError(f"optimize.py failed:\n{proc.stdout}\n{proc.stderr}")
    ids = [job for hyper, _ in files.values() for job in _job_ids(hyper.parent / "results")]
    ended: dict[str, float] = {}
    try:
        while len(ended) < len(files):
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"the studies did not end within {timeout_s:.0f} s")
            for label, (hyper, _) in files.items():
                if label not in ended and not _queued(_job_ids(hyper.parent / "results")):
                    ended[label] = time.monotonic() - started
                    print(f"warning/fit_wall_time {label}: done after {ended[label]:.0f} s", flush=True)
            time.sleep(2)
    finally:
        if len(ended) < len(files):
            subprocess.run(["scancel", *ids], capture_output=True, check=False)
    return {label: measure(hyper, model, ended[label]) for label, (hyper, model) in files.items()}


def _row(label: str, m: dict[str, Any]) -> str:
    lost = m["lost_after_s"] + m["lost_none_s"]
    share = f"{100 * lost / m['trial_s']:.0f}%" if m["trial_s"] else "-"
    unrecorded = f" (+{m['unrecorded']} killed, unrecorded)" if m["unrecorded"] else ""
    return (
        f"| {label.replace('/', ' | ')} | {m['runs']} | {m['complete']} | {m['trial_s']:.0f} | "
        f"{m['at_checkpoint']} / {m['cut']}{unrecorded} | {m['lost_after_s']:.0f} | {m['lost_none_s']:.0f} | "
        f"{lost:.0f} ({share}) | {m['wall_s']:.0f} s |"
    )


def section(setup: Setup, results: dict[str, dict[str, Any]], command: str) -> str:
    epochs = ", ".join(f"{s:g}" for s in setup.epoch_s)
    return (
        "## GPU time lost at time limits\n\n"
        f"`{command}`: four studies at once on the test cluster, alike but for `optuna.fit_wall_time` "
        "and the\nwarning before the time limit (`stop_warning_s`: the default, a quarter of a "
        "2-minute limit, or none);\neach one job of "
        f"{setup.workers} workers with a {setup.minutes}-minute limit, putting itself back in the "
        f"queue until its {setup.workers} trials\nare complete. A trial sets up for "
        f"{setup.startup_s:g} s, then trains {setup.epochs} epochs of {epochs} s (by chain of continued "
        "trials, in\nturn), saving a checkpoint after each and leaving when asked. Lost: in each trial "
        "stopped at a time limit,\nthe time after its last checkpoint, or all of it when it had saved "
        "none, from the trials' own records.\nTrial time: all the time spent in trials.\n\n"
        "| warning | `fit_wall_time` | job runs | trials complete | trial time (s) | trials stopped: at "
        "a checkpoint / cut | lost after the last checkpoint (s) | lost before a first checkpoint (s) | "
        "lost in all (s, share of trial time) | study done in |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
        + "\n".join(_row(_label(case), results[_label(case)]) for case in CASES)
        + f"\n\nMeasured {datetime.date.today()}, Slurm {_slurm_version()}, Optuna {optuna.__version__}.\n"
    )


def _slurm_version() -> str:
    proc = subprocess.run(["sinfo", "--version"], capture_output=True, text=True, check=False)
    return proc.stdout.split()[-1] if proc.returncode == 0 and proc.stdout.split() else "?"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.wall_time", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--workers", type=int, default=Setup.workers)
    parser.add_argument("--minutes", type=int, default=Setup.minutes, help="each job's time limit")
    parser.add_argument("--startup-s", type=float, default=Setup.startup_s)
    parser.add_argument("--epochs", type=int, default=Setup.epochs)
    parser.add_argument("--epoch-s", default=",".join(f"{s:g}" for s in Setup.epoch_s))
    parser.add_argument("--smoke", action="store_true", help="a tiny run that only checks it works")
    parser.add_argument("--dir", type=Path, default=None, help="where the studies go (a shared file system)")
    parser.add_argument("--keep", action="store_true", help="keep the studies' folders, to look into")
    parser.add_argument("--timeout-min", type=float, default=40.0)
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    epoch_s = tuple(float(s) for s in args.epoch_s.split(","))
    setup = SMOKE if args.smoke else Setup(args.workers, args.minutes, args.startup_s, args.epochs, epoch_s)
    command = "python -m benchmarks.wall_time" + (" --smoke" if args.smoke else "")
    if args.keep:
        folder = Path(tempfile.mkdtemp(dir=args.dir, prefix="wall-time-"))
        print(f"the studies go to {folder}", flush=True)
        results = run(setup, folder, args.timeout_min * 60)
    else:
        with tempfile.TemporaryDirectory(dir=args.dir, prefix="wall-time-") as tmp:
            results = run(setup, Path(tmp), args.timeout_min * 60)
    for case in CASES:
        print(_row(_label(case), results[_label(case)]), flush=True)
    write_section(args.output, "wall-time", section(setup, results, command))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))
    return 0

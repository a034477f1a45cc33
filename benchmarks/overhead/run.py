"""What the worker path costs over plain Optuna: per trial (a slope) and at start-up.

Per trial: a null objective over the same three parameters (one of them written into the model
config by colon path), RandomSampler, one worker, run through plain ``study.optimize`` and through
the full worker path (checked config, the user's Objective class, colon-path updates and
custom_updates, the budget check under the claim lock, the owner file, the trial's record, the CSV
row). Each side notes when each trial's objective starts. The two sides of a pair run at the same
time, each in a process of its own on a core of its own and on a storage of its own kind, and
start their first trials together; each side's cost per trial is taken over the stretch of time
when both are past trial ``--from`` and neither has ended, so start-up is left out, and a shared
disk whose fsyncs slow down for a while, or a CPU that does, slows both alike. Pairs come in
couples, the second with the sides' cores traded; the ratio reported is the median of the
couples' ratios (each the geometric mean of its two pairs').

Start-up: from starting ``python optimize.py hyper.yml model.yml`` to the first trial running (the
objective writes a marker file with the time at its first call), against a plain Optuna script
that imports optuna, creates the same study on the same storage and runs its first trial; pairs
again, medians. Then ``python -X importtime`` of what each command imports.

    python -m benchmarks.overhead [--trials 2500] [--from 500] [--repeats 3] [--output docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import datetime
import math
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

from aimlutils.hyper_opt.config import load_config
from aimlutils.hyper_opt.coordination.study import create_or_load
from aimlutils.hyper_opt.storage import open_storage
from aimlutils.hyper_opt.worker import Worker
from benchmarks.common.doc import write_section

ROOT = Path(__file__).resolve().parents[2]
STORAGES = ("journal file", "sqlite")

OBJECTIVE = """
import time
from aimlutils.hyper_opt.base_objective import *

MARKER = {marker!r}

def custom_updates(trial, conf):
    conf["model"]["layers"] = [16] * conf["model"]["num_layers"]
    return conf

class Objective(BaseObjective):
    def __init__(self, study, config, metric="val_loss", device="cpu"):
        BaseObjective.__init__(self, study, config, metric, device)
        self.starts = []

    def train(self, trial, conf):
        self.starts.append(time.perf_counter())
        if MARKER and len(self.starts) == 1:
            try:
                with open(MARKER, "x") as fh:
                    fh.write(repr(time.time()))
            except FileExistsError:
                pass
        return {{"val_loss": conf["optimizer"]["learning_rate"] + conf["model"]["dropout"], "acc": 0.5}}
"""

#: A plain Optuna script doing what optimize.py does up to its first trial: same study, same storage.
PLAIN_SCRIPT = """
import sys, time
import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

location, marker = sys.argv[1], sys.argv[2]
if location.startswith("sqlite:"):
    storage = RDBStorage(location)
else:
    storage = JournalStorage(JournalFileBackend(location, lock_obj=JournalFileOpenLock(location)))
sampler = optuna.samplers.RandomSampler(seed=0)
study = optuna.create_study(study_name="plain", storage=storage, sampler=sampler)

def objective(trial):
    lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    dropout = trial.suggest_float("dropout", 0.0, 0.5)
    trial.suggest_int("num_layers", 1, 4)
    if trial.number == 0:
        with open(marker, "w") as fh:
            fh.write(repr(time.time()))
    return lr + dropout

optuna.logging.set_verbosity(optuna.logging.WARNING)
study.optimize(objective, n_trials=1)
"""

PARAMETERS = {
    "optimizer:learning_rate": {"type": "loguniform", "settings": {"name": "lr", "low": 1e-5, "high": 1e-1}},
    "model:dropout": {"type": "float", "settings": {"name": "dropout", "low": 0.0, "high": 0.5}},
    "model:num_layers": {"type": "int", "settings": {"name": "num_layers", "low": 1, "high": 4}},
}
MODEL = {"model": {"dropout": 0.1, "num_layers": 2}, "optimizer": {"learning_rate": 0.001}}

#: Packages a worker should not need: their import time is reported where a command loads them.
HEAVY = ("pydantic", "rich", "pandas", "matplotlib", "sqlalchemy", "numpy", "yaml")
#: Packages counted as part of another: pydantic's own dependencies.
PART_OF = {"pydantic_core": "pydantic", "annotated_types": "pydantic", "typing_inspection": "pydantic"}
#: What each command imports before its first trial (optimize.py loads its run command on use).
COMMANDS = {
    "plain Optuna script": "optuna",
    "optimize.py": "aimlutils.hyper_opt.cli, aimlutils.hyper_opt.commands.run, rich.console",
    "worker (python -m aimlutils.hyper_opt.worker)": "aimlutils.hyper_opt.worker",
}


def _go() -> None:
    """Start at once (a side run alone)."""


def storage_url(kind: str, folder: Path) -> str | None:
    return None if kind == "journal file" else f"sqlite:///{folder}/study.db"


def plain_storage(kind: str, folder: Path) -> optuna.storages.BaseStorage:
    """The storage as a plain Optuna script opens it (the journal with the worker's kind of lock)."""
    if kind == "sqlite":
        return optuna.storages.RDBStorage(f"sqlite:///{folder}/study.db")
    path = str(folder / "study.journal")
    return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))


def plain_optuna(kind: str, folder: Path, n_trials: int, ready: Callable[[], None] = _go) -> list[float]:
    """When each trial's objective started, through plain ``study.optimize``."""
    sampler = optuna.samplers.RandomSampler(seed=0)
    study = optuna.create_study(study_name="plain", storage=plain_storage(kind, folder), sampler=sampler)
    starts: list[float] = []

    def objective(trial: optuna.Trial) -> float:
        starts.append(time.perf_counter())
        lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        dropout = trial.suggest_float("dropout", 0.0, 0.5)
        trial.suggest_int("num_layers", 1, 4)
        return lr + dropout

    ready()
    study.optimize(objective, n_trials=n_trials)
    return starts


def write_study(folder: Path, kind: str, n_trials: int, marker: Path | None = None) -> Path:
    """``hyper.yml``, ``model.yml`` and ``objective.py`` of the worker side; returns ``hyper.yml``."""
    (folder / "objective.py").write_text(OBJECTIVE.format(marker=str(marker) if marker else ""))
    url = storage_url(kind, folder)
    hyper = {
        "optuna": {
            "name": "worker",
            "objective": str(folder / "objective.py"),
            "metric": "val_loss",
            "direction": "minimize",
            "n_trials": n_trials,
            "save_path": str(folder / "run"),
            "sampler": {"type": "RandomSampler", "seed": 0},
            "parameters": PARAMETERS,
            **({"storage": url} if url else {}),
        }
    }
    (folder / "hyper.yml").write_text(yaml.safe_dump(hyper))
    (folder / "model.yml").write_text(yaml.safe_dump(MODEL))
    return folder / "hyper.yml"


def full_worker(kind: str, folder: Path, n_trials: int, ready: Callable[[], None] = _go) -> list[float]:
    """When each trial's ``train`` started, through one worker of the package."""
    hyper = write_study(folder, kind, n_trials)
    cfg = load_config(hyper, folder / "model.yml")
    create_or_load(cfg, open_storage(cfg.storage), 1)
    worker = Worker(cfg)
    ready()
    ran = worker.run()
    rows = len(cfg.csv_path.read_text().splitlines())
    if ran != n_trials or rows != n_trials + 1:
        raise RuntimeError(f"the worker ran {ran} trials and wrote {rows - 1} rows, not {n_trials}")
    starts: list[float] = worker.objective.starts  # type: ignore[attr-defined]
    return starts


def window_ms(starts: list[float], low: float, high: float) -> float | None:
    """Milliseconds per trial among the trials that started between ``low`` and ``high``; ``None``
    when fewer than 3 did."""
    inside = [t for t in starts if low <= t <= high]
    if len(inside) < 3:
        return None
    return 1000 * (inside[-1] - inside[0]) / (len(inside) - 1)


def own_ms(starts: list[float], first: int) -> float:
    """Milliseconds per trial of one side from its trial ``first`` to its last."""
    return 1000 * (starts[-1] - starts[first]) / max(1, len(starts) - 1 - first)


Runner = Callable[..., list[float]]
SIDES: dict[str, Runner] = {"plain": plain_optuna, "worker": full_worker}


def _side(name: str, kind: str, n_trials: int, cpu: int | None, barrier: Any, out: Any) -> None:
    """One side of a pair, in its own process (on its own core when there are two)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out.send(SIDES[name](kind, Path(tmp), n_trials, barrier.wait))
    except BaseException as err:
        barrier.abort()
        out.send(err)


def _received(name: str, pipe: Any) -> Any:
    """What a side's process sent back; the error it met, raised here."""
    got = pipe.recv()
    if isinstance(got, BaseException):
        raise RuntimeError(f"the {name} side failed: {got!r}") from got
    return got


def pair_ms(kind: str, n_trials: int, first: int, swap: bool = False) -> tuple[float, float]:
    """(plain Optuna, worker path) milliseconds per trial, both run at the same time.

    Each side runs in a process of its own, on a core of its own, both starting their first
    trial together; each side's cost is taken over the stretch of time when both were past trial
    ``first`` and neither had ended. A disk whose fsyncs slow down for a while (shared with other
    jobs) or a CPU that slows down then slows both sides alike. ``swap`` trades the sides' cores.
    """
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    cpus = sorted(os.sched_getaffinity(0))[:2]
    if swap:
        cpus.reverse()
    procs, pipes = [], {}
    for i, name in enumerate(SIDES):
        here, there = ctx.Pipe(duplex=False)
        cpu = cpus[i] if len(cpus) >= 2 else None
        proc = ctx.Process(target=_side, args=(name, kind, n_trials, cpu, barrier, there))
        proc.start()
        procs.append(proc)
        pipes[name] = here
    starts = {name: _received(name, pipe) for name, pipe in pipes.items()}
    for proc in procs:
        proc.join()
    low = max(s[first] for s in starts.values())
    high = min(s[-1] for s in starts.values())
    plain, worker = window_ms(starts["plain"], low, high), window_ms(starts["worker"], low, high)
    if plain is None or worker is None:
        # One side ran far ahead of the other (a machine busy with more than this): each side's
        # own stretch, still run at the same time, is the best figure this pair gives.
        print("the sides overlapped by fewer than 3 trials; each side's own slope (raise --trials)")
        return own_ms(starts["plain"], first), own_ms(starts["worker"], first)
    return plain, worker


def per_trial(kind: str, n_trials: int, first: int, repeats: int) -> list[tuple[float, float]]:
    """``repeats`` couples of pairs, as (plain Optuna, worker path) milliseconds per trial.

    The two cores of a machine are not alike (one takes the disk's interrupts, say), and a side
    that runs on the quicker one gains over the other: each couple runs one pair, then the same
    with the sides' cores traded, and its figures are the geometric means of the two, where the
    cores' difference cancels out.
    """
    couples = []
    for _ in range(repeats):
        runs = [pair_ms(kind, n_trials, first, swap=swap) for swap in (False, True)]
        for (plain, worker), swap in zip(runs, ("", ", cores traded"), strict=True):
            print(f"{kind}: plain {plain:.3f} ms, worker {worker:.3f} ms per trial{swap}", flush=True)
        couples.append((_geometric_mean([p for p, _ in runs]), _geometric_mean([w for _, w in runs])))
    return couples


def _counted_side(name: str, kind: str, n_trials: int, out: Any) -> None:
    """Python calls made by one side from its first trial on, in a process of its own."""
    counted = [0]

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" or event == "c_call":
            counted[0] += 1

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            SIDES[name](kind, Path(tmp), n_trials, lambda: sys.setprofile(profile))
            sys.setprofile(None)
        out.send(counted[0])
    except BaseException as err:
        sys.setprofile(None)
        out.send(err)


def calls_per_trial(kind: str, low: int, high: int) -> dict[str, float]:
    """Python function calls per trial of each side: the difference between runs of ``high`` and
    ``low`` trials, over ``high - low``. A count, not a time, so the same however loaded the
    machine and its disk are: what the CPU side of the ratio comes from."""
    ctx = multiprocessing.get_context("fork")
    counts: dict[str, list[int]] = {name: [] for name in SIDES}
    for name in SIDES:
        for n in (low, high):
            here, there = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_counted_side, args=(name, kind, n, there))
            proc.start()
            counts[name].append(_received(name, here))
            proc.join()
    return {name: (c[1] - c[0]) / (high - low) for name, c in counts.items()}


def _geometric_mean(values: list[float]) -> float:
    return math.prod(values) ** (1 / len(values))


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def _wait_for(marker: Path, proc: subprocess.Popen[bytes], timeout_s: float) -> float:
    """The time written in ``marker`` once ``proc`` writes it."""
    deadline = time.monotonic() + timeout_s
    while not marker.exists() or not marker.read_text():
        if proc.poll() is not None and not marker.exists():
            raise RuntimeError(f"{proc.args} exited with {proc.returncode} before its first trial")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{proc.args}: no trial after {timeout_s} s")
        time.sleep(0.005)
    return float(marker.read_text())


def startup_s(side: str, folder: Path) -> float:
    """Seconds from starting ``side``'s command to its first trial running."""
    marker = folder / "first-trial"
    if side == "plain":
        argv = [sys.executable, "-c", PLAIN_SCRIPT, str(folder / "study.journal"), str(marker)]
    else:
        hyper = write_study(folder, "journal file", 2, marker)
        argv = [sys.executable, str(ROOT / "optimize.py"), str(hyper), str(folder / "model.yml")]
    started = time.time()
    proc = subprocess.Popen(argv, cwd=folder, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = _wait_for(marker, proc, 120)
    _, err = proc.communicate(timeout=120)
    if proc.returncode:
        raise RuntimeError(f"{argv} exited with {proc.returncode}: {err.decode()[-2000:]}")
    return first - started


def startup(repeats: int) -> list[tuple[float, float]]:
    """``repeats`` pairs of (plain Optuna script, optimize.py) seconds to the first trial."""
    pairs = []
    for repeat in range(repeats):
        sides = ["plain", "optimize"] if repeat % 2 == 0 else ["optimize", "plain"]
        s = {}
        for side in sides:
            with tempfile.TemporaryDirectory() as tmp:
                s[side] = startup_s(side, Path(tmp))
        pairs.append((s["plain"], s["optimize"]))
        print(f"start-up: plain {s['plain']:.2f} s, optimize.py {s['optimize']:.2f} s", flush=True)
    return pairs


def import_times(modules: str) -> tuple[float, dict[str, float]]:
    """``python -X importtime -c 'import modules'``: its total, and the time of each of ``HEAVY``
    that it loads (the own times of all the package's modules, wherever they were imported)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {modules}"],
        capture_output=True,
        text=True,
        env=_env(),
        check=True,
    )
    total, heavy = 0.0, dict.fromkeys(("aimlutils", *HEAVY), 0.0)
    for line in proc.stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if len(fields) != 3 or not fields[0].strip().isdigit():
            continue  # the header line
        own, package = int(fields[0]) / 1e6, fields[2].strip().split(".")[0]
        package = PART_OF.get(package, package)
        total += own
        if package in heavy:
            heavy[package] += own
    return total, {name: s for name, s in heavy.items() if s > 0}


def _median(values: list[float]) -> float:
    return statistics.median(values)


def per_trial_table(
    results: dict[str, list[tuple[float, float]]],
    n_trials: dict[str, int],
    first: int,
    calls: dict[str, dict[str, float]],
) -> str:
    rows = [
        "| storage | trials | plain Optuna (ms/trial) | aimlutils worker (ms/trial) "
        "| ratio (median of couples) "
        "| ratios of the couples | Python calls per trial (plain / worker, ratio) |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, pairs in results.items():
        ratios = [w / p for p, w in pairs]
        counted = calls[kind]
        calls_ratio = counted["worker"] / counted["plain"]
        rows.append(
            f"| {kind} | {first} to {n_trials[kind]} | {_median([p for p, _ in pairs]):.3f} | "
            f"{_median([w for _, w in pairs]):.3f} | **{_median(ratios):.2f}** | "
            f"{', '.join(f'{r:.2f}' for r in ratios)} | "
            f"{counted['plain']:,.0f} / {counted['worker']:,.0f}, {calls_ratio:.2f} |"
        )
    return "\n".join(rows)


def startup_table(pairs: list[tuple[float, float]]) -> str:
    differences = [o - p for p, o in pairs]
    return "\n".join(
        [
            "| plain Optuna script (s) | optimize.py (s) | difference (median of pairs) "
            "| differences of the pairs |",
            "|---|---|---|---|",
            f"| {_median([p for p, _ in pairs]):.2f} | {_median([o for _, o in pairs]):.2f} | "
            f"**{_median(differences):.2f} s** | {', '.join(f'{d:.2f}' for d in differences)} |",
        ]
    )


def import_table(repeats: int) -> str:
    rows = ["| command | imports (s) | of which (s) | not loaded |", "|---|---|---|---|"]
    for label, modules in COMMANDS.items():
        runs = [import_times(modules) for _ in range(repeats)]
        total = _median([t for t, _ in runs])
        names = [n for n in ("aimlutils", *HEAVY) if any(n in heavy for _, heavy in runs)]
        parts = [f"{n} {_median([h.get(n, 0.0) for _, h in runs]):.2f}" for n in names]
        absent = [n for n in HEAVY if n not in names]
        rows.append(f"| {label} | {total:.2f} | {', '.join(parts) or '-'} | {', '.join(absent) or '-'} |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overhead", description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=2500, help="trials per journal-file run (2500)")
    parser.add_argument(
        "--sqlite-trials", type=int, default=1500, help="trials per SQLite run, ten times slower (1500)"
    )
    parser.add_argument("--from", dest="first", type=int, default=500, help="slope from this trial (500)")
    parser.add_argument("--repeats", type=int, default=3, help="couples of pairs per storage (default 3)")
    parser.add_argument("--startup-repeats", type=int, default=7, help="start-up pairs (default 7)")
    parser.add_argument("--import-repeats", type=int, default=3, help="importtime runs per command (3)")
    parser.add_argument("--storages", default=",".join(STORAGES), help="journal file, sqlite")
    parser.add_argument(
        "--calls", default="100,300", help="trial counts of the two runs that count Python calls (100,300)"
    )
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks.md"))
    args = parser.parse_args(argv)
    if not 0 <= args.first < min(args.trials, args.sqlite_trials) - 1:
        parser.error(
            f"--from must be at least 0 and below --trials - 1 and --sqlite-trials - 1, got {args.first}"
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kinds = [k.strip() for k in args.storages.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in STORAGES]
    if unknown:
        parser.error(f"--storages: unknown {unknown}; allowed: {', '.join(STORAGES)}")
    trials = {"journal file": args.trials, "sqlite": args.sqlite_trials}
    counts = [int(n) if n.strip().isdigit() else -1 for n in args.calls.split(",")]
    if len(counts) != 2 or not 0 < counts[0] < counts[1]:
        parser.error(
            f"--calls: two trial counts, the first below the second, like 100,300; got {args.calls!r}"
        )
    low, high = counts
    results = {kind: per_trial(kind, trials[kind], args.first, args.repeats) for kind in kinds}
    calls = {kind: calls_per_trial(kind, low, high) for kind in kinds}
    started = startup(args.startup_repeats)
    imports = import_table(args.import_repeats)
    text = (
        "## Worker overhead against plain Optuna\n\n"
        "`python -m benchmarks.overhead` runs a null objective over three parameters (RandomSampler,\n"
        "one worker) through plain `study.optimize` and through the full worker path (checked config,\n"
        "the user's `Objective` class, colon-path updates, `custom_updates`, the `n_trials` budget\n"
        "check under its lock, the owner file, the trial's record, one CSV row per trial), on the same\n"
        "storage kind. The two sides of a pair run at the same time, each in its own process on its\n"
        "own core with its own study, and start their first trials together; each side's cost per\n"
        "trial is the time per trial started while both were past the first trials of the range and\n"
        "neither had ended, so start-up is left out, and a disk or CPU that slows down for a while\n"
        "slows both alike. The two cores are not alike (one takes the disk's interrupts), so pairs\n"
        "come in couples, the second with the sides' cores traded, and a couple's figures are the\n"
        f"geometric means of its two pairs'. {args.repeats} couples per storage; the ratio is the\n"
        "median of the couples' ratios. The target is at most 1.10.\n\n"
        f"{per_trial_table(results, trials, args.first, calls)}\n\n"
        "Writes per trial: both sides commit five times (journal: five appends, each a lock and an\n"
        "fsync; SQLite: five transactions), as the worker's record goes out with the tell and, on\n"
        "SQLite, the trial's first heartbeat with its first parameter. What the worker adds is CPU,\n"
        "one read of the budget and one of the trial's end time, and small files (claim lock, owner\n"
        "file, CSV row, applied config). The disk here is shared with other jobs, so an fsync's cost\n"
        "varies from minute to minute; hence sides run together, pairs and medians.\n\n"
        "The last column counts instead of timing: the Python and C function calls each side makes\n"
        f"per trial, the difference between a run of {high} trials and one of {low}, over {high - low}\n"
        "(`sys.setprofile` from the first trial on, each run in a fresh process). It does not move with\n"
        "the machine's load, so it shows the CPU the worker adds even when the timed ratios are noisy.\n\n"
        "### Start-up\n\n"
        "From starting `python optimize.py hyper.yml model.yml` (a new study on the default journal\n"
        "file, local workers) to the first trial's objective running, against a plain Optuna script\n"
        "that imports optuna, creates the same study on the same storage and runs its first trial;\n"
        f"{args.startup_repeats} interleaved pairs, medians. The target is at most 1.0 s more.\n\n"
        f"{startup_table(started)}\n\n"
        "What each command imports before its first trial (`python -X importtime`, median of\n"
        f"{args.import_repeats}; for each package named, the time of all its modules):\n\n"
        f"{imports}\n\n"
        f"Measured {datetime.date.today()} on {platform.machine()}, Python {platform.python_version()}, "
        f"Optuna {optuna.__version__}, {len(os.sched_getaffinity(0))} CPU cores, shared with other jobs.\n"
    )
    write_section(args.output, "overhead", text)
    return 0

"""The worker side of the scale benchmark: one process of many real workers in threads, timed and counted.

``run.py`` starts a few of these (``python -m benchmarks.scale.worker_process spec.json``), each
with its share of the case's workers; a process builds its workers, prints ``ready``, starts them
all on the ``go`` line from its standard input, and writes what it measured to the spec's result
file.
"""

from __future__ import annotations

import collections
import faulthandler
import json
import logging
import os
import resource
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from aimlutils.hyper_opt.base_objective import BaseObjective
from aimlutils.hyper_opt.config import RunConfig, load_config
from aimlutils.hyper_opt.coordination import Room, TrialBudget
from aimlutils.hyper_opt.logs import configure_logging
from aimlutils.hyper_opt.storage.journal import JournalAppendLock
from aimlutils.hyper_opt.storage.proxy import ProxyAddress
from aimlutils.hyper_opt.worker import Worker
from aimlutils.hyper_opt.worker.setup import worker_storage


class SleepObjective(BaseObjective):
    """One parameter, then ``bench.trial_s`` seconds of "training": the time a GPU would be busy."""

    def __init__(
        self, study: Any, config: dict[str, Any], metric: str = "val_loss", device: str = "cpu"
    ) -> None:
        super().__init__(study, config, metric, device)
        self.spans: list[tuple[float, float]] = []

    def train(self, trial: optuna.trial.BaseTrial, conf: dict[str, Any]) -> dict[str, float]:
        started = time.time()
        time.sleep(conf["bench"]["trial_s"])
        self.spans.append((started, time.time()))
        return {"val_loss": (conf["optimizer"]["learning_rate"] - 0.3) ** 2}


class TimedWorker(Worker):
    """The package's worker, with its claims (ask), trial ends (tell) and sweeps timed.

    The loop claims and ends trials through ``self.life``; this worker's ``life`` has its
    ``claim`` and ``finish`` replaced by timed ones that call them.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asks: list[tuple[float, float]] = []  # (when it started, seconds)
        self.tells: list[tuple[float, float]] = []  # (when it ended, seconds)
        self.sweeps: list[float] = []
        self.waits = 0
        self.given_back = 0
        self.untimed_claim, self.untimed_finish = self.life.claim, self.life.finish
        self.life.claim = self.timed_claim  # type: ignore[method-assign]
        self.life.finish = self.timed_finish  # type: ignore[method-assign]

    def timed_claim(self, budget: TrialBudget) -> optuna.Trial | Room | None:
        started, t0 = time.time(), time.perf_counter()
        claimed = self.untimed_claim(budget)
        elapsed = time.perf_counter() - t0
        if isinstance(claimed, optuna.Trial):
            self.asks.append((started, elapsed))
        elif claimed is None:
            self.given_back += 1
        elif claimed is Room.WAIT:
            self.waits += 1
        return claimed

    def timed_finish(self, trial: optuna.Trial, *args: Any, **kwargs: Any) -> FrozenTrial | None:
        """A trial's end (``TrialLife.finish``); timed as a tell when the trial completed (its tell
        with its record, owner file and CSV row), not when it failed or was given back unrun."""
        t0 = time.perf_counter()
        told = self.untimed_finish(trial, *args, **kwargs)
        if told is not None and told.state == TrialState.COMPLETE:
            self.tells.append((time.time(), time.perf_counter() - t0))
        return told

    def sweep(self) -> None:
        t0 = time.perf_counter()
        super().sweep()
        self.sweeps.append(time.perf_counter() - t0)


class Counters:
    """Counts of file and storage operations in this process, and the claim lock's hold times."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.files: collections.Counter[str] = collections.Counter()
        self.storage: collections.Counter[str] = collections.Counter()
        self.claim_hold: list[float] = []
        self.claim_wait: list[float] = []
        self.journal_lock_wait: list[float] = []
        self.stale_check: list[float] = []
        self.replayed = 0
        self.local = threading.local()

    def file(self, name: str) -> None:
        with self.lock:
            self.files[name] += 1

    def call(self, name: str) -> None:
        with self.lock:
            self.storage[name] += 1


def _wrap(owner: Any, name: str, before: Callable[..., None]) -> None:
    original = getattr(owner, name)

    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        before(self, *args, **kwargs)
        return original(self, *args, **kwargs)

    setattr(owner, name, wrapper)


def _count_replayed(backend: Any, counters: Counters) -> None:
    """Count the journal entries each read gives back: every worker replays every entry."""
    read_logs = backend.read_logs

    def counted(self: Any, log_number_from: int) -> Iterator[dict[str, Any]]:
        n = 0
        try:
            for entry in read_logs(self, log_number_from):
                n += 1
                yield entry
        finally:
            with counters.lock:
                counters.replayed += n

    backend.read_logs = counted


def install_counters() -> Counters:
    """Wrap the package's file operations on ``save_path`` (and Optuna's journal file's) with counters."""
    from optuna.storages.journal import JournalFileBackend, JournalRedisBackend

    from aimlutils.hyper_opt.coordination import FileLock, ResultsCsv, RunningTrials, StudyTurn
    from aimlutils.hyper_opt.storage.resilient import RETRIED_METHODS, ResilientStorage

    counters = Counters()
    _wrap(RunningTrials, "mark", lambda self, *a, **k: counters.file("owner file written"))
    _wrap(RunningTrials, "clear", lambda self, *a, **k: counters.file("owner file removed"))
    _wrap(RunningTrials, "owner", lambda self, *a, **k: counters.file("owner file read"))
    _wrap(ResultsCsv, "append", lambda self, *a, **k: counters.file("CSV row"))
    _wrap(StudyTurn, "take", lambda self, *a, **k: counters.file("sweep turn"))
    _wrap(JournalFileBackend, "read_logs", lambda self, *a, **k: counters.file("journal read"))
    for backend in (JournalFileBackend, JournalRedisBackend):
        _count_replayed(backend, counters)
    _wrap(JournalFileBackend, "append_logs", lambda self, *a, **k: counters.file("journal append"))
    read_address = ProxyAddress.read

    def counted_read(path: Path) -> ProxyAddress | None:
        counters.file("proxy address read")
        return read_address(path)

    ProxyAddress.read = staticmethod(counted_read)  # type: ignore[method-assign,assignment]
    # The storage's public calls; Optuna's private one (stale trial ids, for a heartbeat check)
    # is counted where the check is made, below.
    for name in (n for n in RETRIED_METHODS if not n.startswith("_")):
        _wrap(ResilientStorage, name, lambda self, *a, _name=name, **k: counters.call(_name))

    acquire, release = FileLock.acquire, FileLock.release

    def timed_acquire(self: FileLock, blocking: bool = True) -> bool:
        t0 = time.perf_counter()
        got = acquire(self, blocking)
        counters.file(f"lock {self.path.name}")
        if got and self.path.name == ".claim.lock":
            now = time.perf_counter()
            counters.local.claim_taken = now
            with counters.lock:
                counters.claim_wait.append(now - t0)
        return got

    def timed_release(self: FileLock) -> None:
        if self.held and self.path.name == ".claim.lock":
            held = time.perf_counter() - getattr(counters.local, "claim_taken", time.perf_counter())
            with counters.lock:
                counters.claim_hold.append(held)
        release(self)

    FileLock.acquire = timed_acquire  # type: ignore[method-assign]
    FileLock.release = timed_release  # type: ignore[method-assign]

    fail_stale = optuna.storages.fail_stale_trials

    def timed_fail_stale(study: optuna.Study) -> None:
        t0 = time.perf_counter()
        fail_stale(study)
        counters.call("stale trial ids (heartbeat check)")  # one storage call per check
        with counters.lock:
            counters.stale_check.append(time.perf_counter() - t0)

    optuna.storages.fail_stale_trials = timed_fail_stale

    journal_acquire = JournalAppendLock.acquire

    def timed_journal_acquire(self: JournalAppendLock) -> bool:
        t0 = time.perf_counter()
        got = journal_acquire(self)  # counted as a file op by FileLock's counter
        with counters.lock:
            counters.journal_lock_wait.append(time.perf_counter() - t0)
        return got

    JournalAppendLock.acquire = timed_journal_acquire  # type: ignore[method-assign]
    return counters


class LogCounter(logging.Handler):
    """Counts warnings and errors by their first words; keeps one full example of each."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: collections.Counter[str] = collections.Counter()
        self.examples: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        key = f"{record.levelname} {record.name}: {' '.join(message.split()[:8])}"
        self.counts[key] += 1
        self.examples.setdefault(key, message[:600])


def _raise_file_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def shared_storage(cfg: RunConfig, spec: dict[str, Any]) -> BaseStorage | None:
    """One journal storage for all the worker threads of this process (``Worker(storage=...)``),
    or ``None``: each worker opens its own, as a worker process does.

    On a cluster each worker replays the journal (every entry any worker writes) on its own
    node's CPU. Here a thousand workers share two cores, and a thousand replays of each entry
    starve the threads holding the claim lock of the interpreter: that measures the benchmark
    machine, not the study. Optuna's ``JournalStorage`` is meant to be shared by threads (each
    thread is its own journal worker id); every other part of the worker path stays per worker.
    The re-read load of a study whose workers each replay is in the capacity model. Kinds that
    hold a server connection per worker (the databases, and the proxy in front of one) keep one
    storage per worker: their connections are what the benchmark counts.
    """
    if not spec.get("shared_journal") or cfg.storage.storage_kind.holds_connections:
        return None
    return worker_storage(cfg, spec["indexes"][0])


def child_main(spec_path: Path) -> int:
    """One process of simulated workers: build them, say ready, start on "go", report."""
    spec = json.loads(spec_path.read_text())
    _raise_file_limit()
    threading.stack_size(2 * 1024 * 1024)
    counters = install_counters()
    cfg = load_config(spec["hyper"], spec["model"], objective_given=True)
    configure_logging(cfg.log_file, prefix=f"bench process {spec['process']}", console_level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    log_counter = LogCounter()
    logging.getLogger("aimlutils").addHandler(log_counter)
    logging.getLogger("optuna").addHandler(log_counter)

    n_workers, indexes = spec["workers"], spec["indexes"]
    storage = shared_storage(cfg, spec)
    workers: dict[int, TimedWorker] = {}
    crashes: list[dict[str, Any]] = []
    ended: dict[int, float] = {}
    ran: dict[int, int] = {}
    go = threading.Event()
    built = threading.Semaphore(0)
    state_lock = threading.Lock()

    def crash(index: int, phase: str, err: BaseException) -> None:
        with state_lock:
            crashes.append(
                {
                    "worker": index,
                    "phase": phase,
                    "error": f"{type(err).__name__}: {err}"[:500],
                    "traceback": traceback.format_exc()[-2000:],
                }
            )

    def one_worker(index: int) -> None:
        try:
            # max_trials only guards against a broken objective, whose failed trials never fill n_trials.
            guard = 4 * spec["trials_per_worker"] + 4
            worker = TimedWorker(
                cfg, index, n_workers, objective_class=SleepObjective, max_trials=guard, storage=storage
            )
        except BaseException as err:
            crash(index, "start", err)
            built.release()
            return
        with state_lock:
            workers[index] = worker
        built.release()
        go.wait()
        try:
            ran[index] = worker.run()
        except BaseException as err:
            crash(index, "run", err)
        finally:
            ended[index] = time.time()

    build_started = time.time()
    threads = [
        threading.Thread(target=one_worker, args=(i,), name=f"worker-{i}", daemon=True) for i in indexes
    ]
    for thread in threads:
        thread.start()
    for _ in threads:
        built.acquire()
    build_s = time.time() - build_started
    print(f"ready {len(workers)}", flush=True)
    line = sys.stdin.readline().split()
    if len(line) != 2 or line[0] != "go":
        os._exit(1)  # the benchmark is gone: nothing to run for
    go_at = float(line[1])
    cpu_at_go = _cpu_s()
    go.set()
    deadline = go_at + spec["deadline_s"]
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.time()))
    stuck = [t.name for t in threads if t.is_alive()]
    stacks = ""
    if stuck:
        with tempfile.TemporaryFile("w+") as fh:
            faulthandler.dump_traceback(fh, all_threads=True)
            fh.seek(0)
            stacks = fh.read()[-20000:]
    result = {
        "process": spec["process"],
        "build_s": build_s,
        "cpu_s": _cpu_s() - cpu_at_go,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": threading.active_count(),
        "crashes": crashes,
        "stuck": stuck,
        "deadline": deadline,
        "stacks": stacks,
        "files": dict(counters.files),
        "storage_calls": dict(counters.storage),
        "claim_hold": counters.claim_hold,
        "claim_wait": counters.claim_wait,
        "journal_lock_wait": counters.journal_lock_wait,
        "stale_check": counters.stale_check,
        "replayed": counters.replayed,
        "log": dict(log_counter.counts),
        "log_examples": log_counter.examples,
        "workers": {
            str(i): {
                "ran": ran.get(i),
                "ended": ended.get(i),
                "asks": w.asks,
                "tells": w.tells,
                "spans": w.objective.spans,  # type: ignore[attr-defined]
                "sweeps": w.sweeps,
                "waits": w.waits,
                "given_back": w.given_back,
            }
            for i, w in workers.items()
        },
    }
    Path(spec["result"]).write_text(json.dumps(result))
    sys.stdout.flush()
    logging.shutdown()
    os._exit(0)  # stuck threads are daemons; do not wait for them


if __name__ == "__main__":
    sys.exit(child_main(Path(sys.argv[1])))

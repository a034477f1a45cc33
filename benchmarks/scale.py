"""Hundreds to thousands of workers on one study: utilisation, latency, connections, file load.

Each case runs the real worker path (``aimlutils.hyper_opt.worker.Worker``: budget, claim lock,
ask/tell, records, CSV, owner files, liveness sweeps) in threads, ``--threads-per-process`` of
them in each of a few processes started by this script, every worker opening its own storage as
a worker process does. The objective sleeps for the trial length, chosen so that the study runs
at a given rate: ``trial length = workers / rate``. The default rates are those of 2,000 workers
with 10-minute trials (3.3 trials/s) and ten times that.

Measured per case: worker utilisation (time in ``train`` summed over workers, over workers x
span), ask (the claim: budget check, ask, owner file, under the claim lock) and tell latency,
database connections (sampled each second from ``pg_stat_activity`` /
``information_schema.processlist`` / ``CLIENT LIST``, the rows whose client port is one of this
benchmark's sockets), trials per second, file operations on ``save_path`` per minute, crashed
and stuck workers. PostgreSQL and MariaDB without the proxy are first asked, as ``optimize.py``
asks them, whether the workers fit (``aimlutils.hyper_opt.capacity``); a case that does not fit
is reported as refused, not run.

    python benchmarks/scale.py                      # the full set, about an hour
    python benchmarks/scale.py --workers 64 --storages journal,redis --rates 33
    python benchmarks/scale.py --smoke --output /tmp/b.md --json /tmp/b.json   # about 30 s

The Redis database (``--redis``, default db 11) must hold nothing else: it is emptied before and
after each Redis case, since Optuna's Redis journal keeps all studies in one log.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime
import faulthandler
import json
import logging
import math
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna

# Run as a script, so this folder is on sys.path.
from _doc import write_section

from aimlutils.hyper_opt import capacity
from aimlutils.hyper_opt.api import _open_study, read_config
from aimlutils.hyper_opt.base_objective import BaseObjective
from aimlutils.hyper_opt.config import RunConfig, load_config
from aimlutils.hyper_opt.launchers import save_run_configs
from aimlutils.hyper_opt.launchers.local_proxy import LocalProxy
from aimlutils.hyper_opt.lifeline import Lifeline
from aimlutils.hyper_opt.logs import configure_logging
from aimlutils.hyper_opt.proxy import ProxyAddress, answers
from aimlutils.hyper_opt.storage import JournalAppendLock, open_for_command
from aimlutils.hyper_opt.worker import Worker

ROOT = Path(__file__).resolve().parents[1]

STORAGES = ("journal", "postgresql", "proxy", "mysql", "redis")
LABELS = {
    "journal": "journal file",
    "postgresql": "PostgreSQL direct",
    "proxy": "PostgreSQL + proxy",
    "mysql": "MariaDB direct",
    "redis": "Redis journal",
}
DB_PORTS = {"postgresql": 5432, "proxy": 5432, "mysql": 3306, "redis": 6379}
#: 2,000 workers with 10-minute trials, and ten times that.
DEFAULT_RATES = (2000 / 600, 20000 / 600)


@dataclasses.dataclass(frozen=True)
class Case:
    storage: str
    workers: int
    rate: float
    trials_per_worker: int

    @property
    def trial_s(self) -> float:
        return self.workers / self.rate

    @property
    def n_trials(self) -> int:
        return self.workers * self.trials_per_worker

    @property
    def slug(self) -> str:
        return f"{self.storage}-{self.workers}-{self.rate:.1f}"


# --------------------------------------------------------------------------------------------
# The worker side (a child process): many real workers in threads, timed and counted.


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
    """The package's worker, with its claim (ask) and tell timed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asks: list[tuple[float, float]] = []  # (when it started, seconds)
        self.tells: list[tuple[float, float]] = []  # (when it ended, seconds)
        self.sweeps: list[float] = []
        self.waits = 0
        self.given_back = 0

    def _claim(self) -> Any:
        started, t0 = time.time(), time.perf_counter()
        claimed = super()._claim()
        elapsed = time.perf_counter() - t0
        if isinstance(claimed, optuna.Trial):
            self.asks.append((started, elapsed))
        elif claimed is None:
            self.given_back += 1
        elif claimed.name == "WAIT":
            self.waits += 1
        return claimed

    def _sweep(self) -> None:
        t0 = time.perf_counter()
        super()._sweep()
        self.sweeps.append(time.perf_counter() - t0)

    def _tell(self, trial: optuna.Trial, values: Any) -> Any:
        t0 = time.perf_counter()
        frozen = super()._tell(trial, values)
        self.tells.append((time.time(), time.perf_counter() - t0))
        return frozen


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
    from aimlutils.hyper_opt.resilient import RETRIED_METHODS, ResilientStorage

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
    for name in RETRIED_METHODS:
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


def share_journal_per_process() -> None:
    """One journal storage for all the worker threads of this process, instead of one each.

    On a cluster each worker replays the journal (every entry any worker writes) on its own
    node's CPU. Here a thousand workers share two cores, and a thousand replays of each entry
    starve the threads holding the claim lock of the interpreter: that measures the benchmark
    machine, not the study. Optuna's ``JournalStorage`` is meant to be shared by threads (each
    thread is its own journal worker id); every other part of the worker path stays per worker.
    The re-read load of a study whose workers each replay is in the capacity model.
    """
    from aimlutils.hyper_opt import worker as worker_module

    own_storage = worker_module.worker_storage
    shared: list[Any] = []
    lock = threading.Lock()

    def one_per_process(cfg: RunConfig, index: int) -> Any:
        with lock:
            if not shared:
                shared.append(own_storage(cfg, index))
            return shared[0]

    worker_module.worker_storage = one_per_process  # type: ignore[assignment]


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
    if spec.get("shared_journal") and cfg.storage.kind in ("journal", "redis"):
        share_journal_per_process()
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
            worker = TimedWorker(cfg, index, n_workers, objective_class=SleepObjective, max_trials=guard)
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


# --------------------------------------------------------------------------------------------
# The benchmark side: one case at a time.


def _tcp_ports(pids: Sequence[int], remote_port: int) -> set[int]:
    """Local ports of the established TCP connections of ``pids`` to ``remote_port``."""
    by_inode: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            next(fh)
            for line in fh:
                fields = line.split()
                local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
                if state == "01" and int(remote.rsplit(":", 1)[1], 16) == remote_port:
                    by_inode[inode] = int(local.rsplit(":", 1)[1], 16)
    ports = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:[") and target[8:-1] in by_inode:
                        ports.add(by_inode[target[8:-1]])
    return ports


class ConnectionSampler:
    """Each second: the storage server's count of this benchmark's connections to it."""

    def __init__(self, storage: str, urls: dict[str, str], pids: Callable[[], list[int]]) -> None:
        self.storage, self.urls, self.pids = storage, urls, pids
        self.samples: list[tuple[float, int]] = []
        self.proxy_clients: list[int] = []
        self.load: list[float] = []
        self.proxy_port: int | None = None
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._server: Any = None

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        with contextlib.suppress(Exception):
            if self._server is not None:
                self._server.close()

    def _connect(self) -> Any:
        if self.storage in ("postgresql", "proxy"):
            import psycopg

            url = self.urls["postgresql"].replace("postgresql+psycopg://", "postgresql://")
            return psycopg.connect(url, autocommit=True)
        if self.storage == "mysql":
            import pymysql

            return pymysql.connect(host="127.0.0.1", port=3306, user="root", autocommit=True)
        if self.storage == "redis":
            import redis

            return redis.Redis.from_url(self.urls["redis"])
        return None

    def _count(self, ports: set[int]) -> int:
        if self._server is None:
            self._server = self._connect()
        if self.storage in ("postgresql", "proxy"):
            rows = self._server.execute("SELECT client_port FROM pg_stat_activity").fetchall()
            return sum(1 for (port,) in rows if port in ports)
        if self.storage == "mysql":
            with self._server.cursor() as cur:
                cur.execute("SELECT host FROM information_schema.processlist")
                hosts = [h for (h,) in cur.fetchall()]
            return sum(1 for h in hosts if ":" in str(h) and int(str(h).rsplit(":", 1)[1]) in ports)
        clients = self._server.client_list()
        return sum(1 for c in clients if int(c["addr"].rsplit(":", 1)[1]) in ports)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.load.append(os.getloadavg()[0])
            try:
                pids = self.pids()
                if self.storage in DB_PORTS:
                    ports = _tcp_ports(pids, DB_PORTS[self.storage])
                    self.samples.append((time.time(), self._count(ports)))
                if self.proxy_port is not None:
                    self.proxy_clients.append(len(_tcp_ports(pids, self.proxy_port)))
            except Exception as err:  # a sample lost is not a benchmark lost (the server restarting?)
                self.failures.append(f"{time.strftime('%H:%M:%S')} {type(err).__name__}: {str(err)[:200]}")
                self._server = None


def _pctl(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _proc_cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _hyper(case: Case, folder: Path, urls: dict[str, str], study: str) -> dict[str, Any]:
    section: dict[str, Any] = {
        "name": study,
        "reload": 0,
        "metric": "val_loss",
        "direction": "minimize",
        "n_trials": case.n_trials,
        "gpu": False,
        "save_path": str(folder),
        "sampler": {"type": "RandomSampler"},
        "parameters": {
            "optimizer:learning_rate": {"type": "float", "settings": {"name": "lr", "low": 0.0, "high": 1.0}}
        },
        "storage_wait_s": 300,
    }
    if case.storage in ("postgresql", "proxy"):
        section["storage"] = urls["postgresql"]
    elif case.storage in ("mysql", "redis"):
        section["storage"] = urls[case.storage]
    if case.storage == "proxy":
        section["proxy"] = True
    return {"log": {"save_path": str(folder / "log.txt")}, "optuna": section}


def _empty_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def _drop_study(cfg: RunConfig) -> None:
    if cfg.storage.kind in ("postgresql", "mysql"):
        with contextlib.suppress(Exception):
            optuna.delete_study(study_name=cfg.study_name, storage=cfg.storage.location)


#: The proxy's own code, with its end-of-study exit turned off (see ``--proxy-ends-itself``).
_STAYING_PROXY = (
    "import sys, aimlutils.hyper_opt.proxy as proxy\n"
    "proxy.DONE_CHECK_S = 1e9\n"
    "sys.exit(proxy.main(sys.argv[1:]))"
)


class StayingProxy(LocalProxy):
    """The study's proxy as a local run starts it, but it stays until it is stopped.

    The real proxy leaves once every trial is finished; workers still queued at the claim lock
    then wait for a proxy that is gone (a local run restarts it, over and over). The benchmark
    measures the storage, so its proxy stays to the end unless ``--proxy-ends-itself``.
    """

    def start(self) -> None:
        self.cfg.paths.proxy_address.unlink(missing_ok=True)
        with open(self.cfg.paths.worker_logs / "proxy.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _STAYING_PROXY, str(self.command.hyper), str(self.command.model)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.proc.poll() is None:
            address = ProxyAddress.read(self.cfg.paths.proxy_address)
            if address is not None and address.pid == self.proc.pid and answers(address, timeout=2):
                return
            time.sleep(0.2)
        raise RuntimeError(f"the proxy did not start (see {self.cfg.paths.worker_logs / 'proxy.log'})")


def _stop(proc: subprocess.Popen[Any], timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for_server(cfg: RunConfig, wait_s: float = 300) -> None:
    """Wait while the database server refuses connections (restarted, or full of other clients)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            capacity.database_room(cfg.storage)
            return
        except Exception as err:
            if time.monotonic() > deadline:
                raise
            print(f"  waiting for the server: {str(err).splitlines()[0][:150]}", flush=True)
            time.sleep(5)


def _final_states(cfg: RunConfig) -> dict[str, int]:
    storage = open_for_command(cfg.storage, wait_s=60)
    study = optuna.load_study(study_name=cfg.study_name, storage=storage)
    counts = collections.Counter(t.state.name for t in study.get_trials(deepcopy=False))
    return dict(counts)


def run_case(
    case: Case,
    urls: dict[str, str],
    root: Path,
    threads_per_process: int,
    proxy_ends_itself: bool = False,
    max_case_s: float | None = None,
    shared_journal: bool = True,
) -> dict[str, Any]:
    """Run one case (or find that the database refuses it); the measured figures."""
    folder = root / case.slug
    folder.mkdir(parents=True)
    study = f"scale-{uuid.uuid4().hex[:8]}"
    model = {"optimizer": {"learning_rate": 0.001}, "bench": {"trial_s": case.trial_s}}
    cfg = read_config(_hyper(case, folder, urls, study), model, objective=SleepObjective, base_dir=folder)
    out: dict[str, Any] = {
        "case": dataclasses.asdict(case),
        "trial_s": case.trial_s,
        "n_trials": case.n_trials,
    }
    if case.storage == "proxy" and proxy_ends_itself:
        out["proxy_ends_itself"] = True
    if case.storage in ("journal", "redis"):
        out["shared_journal"] = shared_journal
    if case.storage in ("postgresql", "mysql", "proxy"):
        _wait_for_server(cfg)
        proxy = cfg.optuna.proxy_section
        wanted = proxy.connections if proxy is not None else case.workers
        problem = capacity.connection_problem(cfg.storage, wanted, proxy is not None, local=False)
        if problem is not None:
            room = capacity.database_room(cfg.storage)
            out.update(refused=problem, fit=room.free if room else None)
            return out
    if case.storage == "redis":
        _empty_redis(urls["redis"])
    _open_study(cfg, case.workers)
    command = save_run_configs(cfg)
    env = dict(os.environ)
    # The proxy as a local run has it: started, restarted when it ends while workers run, stopped.
    lifeline = Lifeline()
    kind = LocalProxy if proxy_ends_itself else StayingProxy
    proxy = kind(cfg, command, lifeline) if case.storage == "proxy" else None
    proxy_cpu = 0.0
    if proxy is not None:
        cfg.paths.worker_logs.mkdir(parents=True, exist_ok=True)
        proxy.start()
    n_procs = max(1, math.ceil(case.workers / threads_per_process))
    # Long enough for every trial and the start, short enough to catch a stuck study.
    deadline_s = (case.trials_per_worker + 2) * case.trial_s * 2 + 300
    if max_case_s is not None:
        deadline_s = min(deadline_s, max_case_s)
    children: list[subprocess.Popen[str]] = []
    last_cpu = 0.0
    try:
        for p in range(n_procs):
            spec = {
                "process": p,
                "hyper": str(command.hyper),
                "model": str(command.model),
                "workers": case.workers,
                "trials_per_worker": case.trials_per_worker,
                "indexes": list(range(p, case.workers, n_procs)),
                "deadline_s": deadline_s,
                "result": str(folder / f"result-{p}.json"),
                "shared_journal": shared_journal,
            }
            (folder / f"spec-{p}.json").write_text(json.dumps(spec))
            with open(folder / f"process-{p}.log", "w") as log:
                children.append(
                    subprocess.Popen(
                        [sys.executable, __file__, "--child", str(folder / f"spec-{p}.json")],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=log,
                        text=True,
                        env=env,
                        cwd=folder,
                    )
                )
        build_started = time.time()
        for child in children:
            assert child.stdout is not None
            line = child.stdout.readline()
            if not line.startswith("ready"):
                log = (folder / f"process-{children.index(child)}.log").read_text().strip()
                last = log.splitlines()[-1] if log else f"no output; it said {line!r}"
                raise RuntimeError(f"a worker process did not start: {last}")
        build_s = time.time() - build_started

        def pids() -> list[int]:
            return [c.pid for c in children] + ([proxy.proc.pid] if proxy and proxy.proc else [])

        with ConnectionSampler(case.storage, urls, pids) as sampler:
            if proxy is not None:
                address = ProxyAddress.read(cfg.paths.proxy_address)
                sampler.proxy_port = address.port if address else None
            go_at = time.time()
            for child in children:
                assert child.stdin is not None
                child.stdin.write(f"go {go_at}\n")
                child.stdin.flush()
            wait_until = time.time() + deadline_s + 120
            while time.time() < wait_until and any(c.poll() is None for c in children):
                if proxy is not None and proxy.proc is not None:
                    seen = _proc_cpu_s(proxy.proc.pid)  # readable until the ended proxy is reaped
                    last_cpu = seen if seen is not None else last_cpu
                    if proxy.proc.poll() is not None:
                        proxy_cpu, last_cpu = proxy_cpu + last_cpu, 0.0
                        proxy.keep_alive()
                time.sleep(0.5)
    finally:
        for child in children:
            _stop(child, timeout=5)
        if proxy is not None:
            if proxy.proc is not None and proxy.proc.poll() is None:
                proxy_cpu += _proc_cpu_s(proxy.proc.pid) or 0.0
            proxy.stop()
        lifeline.close()
    results = [json.loads((folder / f"result-{p}.json").read_text()) for p in range(n_procs)]
    out.update(_figures(case, results, go_at, build_s, sampler))
    out["proxy_cpu_s"] = proxy_cpu if proxy is not None else None
    out["proxy_restarts"] = proxy.restarts if proxy is not None else None
    out["sampler_failures"] = sampler.failures
    out["final_states"] = _final_states(cfg)
    csv_rows = cfg.csv_path.read_text().count("\n") - 1 if cfg.csv_path.exists() else 0
    out["csv_rows"] = csv_rows
    _drop_study(cfg)
    if case.storage == "redis":
        _empty_redis(urls["redis"])
    return out


def _figures(
    case: Case, results: list[dict[str, Any]], go_at: float, build_s: float, sampler: ConnectionSampler
) -> dict[str, Any]:
    workers = {int(i): w for r in results for i, w in r["workers"].items()}
    ends = [w["ended"] for w in workers.values() if w["ended"]]
    # Workers still running at the time limit had the whole of it.
    limits = [r["deadline"] for r in results if r["stuck"]]
    span = max(ends + limits) - go_at if ends or limits else float("nan")
    busy = sum(b - a for w in workers.values() for a, b in w["spans"])
    asks = [dt for w in workers.values() for _, dt in w["asks"]]
    later_asks = [dt for w in workers.values() for _, dt in w["asks"][1:]]
    tells = [dt for w in workers.values() for _, dt in w["tells"]]
    firsts = [w["spans"][0][0] for w in workers.values() if w["spans"]]
    last_first_start = max(firsts) - go_at if firsts else None
    # Between a trial's end and the same worker's next trial start: tell, CSV, claim, suggest.
    gaps = [b[0] - a[1] for w in workers.values() for a, b in zip(w["spans"], w["spans"][1:], strict=False)]
    files = collections.Counter[str]()
    calls = collections.Counter[str]()
    logs = collections.Counter[str]()
    examples: dict[str, str] = {}
    for r in results:
        files.update(r["files"])
        calls.update(r["storage_calls"])
        logs.update(r["log"])
        examples.update(r["log_examples"])
    finished = sum(len(w["tells"]) for w in workers.values())
    conns = [n for t, n in sampler.samples if t >= go_at]
    crashes = [c for r in results for c in r["crashes"]]
    stuck = [s for r in results for s in r["stuck"]]
    file_ops = sum(files.values())
    return {
        "span_s": span,
        "build_s": build_s,
        "utilisation": busy / (case.workers * span) if span == span and span > 0 else None,
        "busy_s": busy,
        "ask_p50": _pctl(asks, 0.5),
        "ask_p99": _pctl(asks, 0.99),
        "ask_later_p50": _pctl(later_asks, 0.5),
        "ask_later_p99": _pctl(later_asks, 0.99),
        "tell_p50": _pctl(tells, 0.5),
        "tell_p99": _pctl(tells, 0.99),
        "gap_p50": _pctl(gaps, 0.5),
        "gap_p99": _pctl(gaps, 0.99),
        "claim_hold_p50": _pctl([h for r in results for h in r["claim_hold"]], 0.5),
        "claim_hold_p99": _pctl([h for r in results for h in r["claim_hold"]], 0.99),
        "claim_wait_p99": _pctl([h for r in results for h in r["claim_wait"]], 0.99),
        "journal_lock_wait_p99": _pctl([h for r in results for h in r["journal_lock_wait"]], 0.99),
        "stale_check_p50": _pctl([h for r in results for h in r["stale_check"]], 0.5),
        "stale_check_p99": _pctl([h for r in results for h in r["stale_check"]], 0.99),
        "claim_wait_p50": _pctl([h for r in results for h in r["claim_wait"]], 0.5),
        "sweeps": len([s for w in workers.values() for s in w["sweeps"]]),
        "sweep_p99": _pctl([s for w in workers.values() for s in w["sweeps"]], 0.99),
        "start_s": last_first_start,
        "start_rate": case.workers / last_first_start if last_first_start else None,
        "trials_finished": finished,
        "trials_per_s": finished / span if span and span == span else None,
        "connections_max": max(conns) if conns else None,
        "connections_median": statistics.median(conns) if conns else None,
        "proxy_clients_max": max(sampler.proxy_clients) if sampler.proxy_clients else None,
        "load_max": max(sampler.load) if sampler.load else None,
        "file_ops": dict(files),
        "file_ops_per_min": file_ops / (span / 60) if span else None,
        "file_ops_per_trial": file_ops / finished if finished else None,
        "storage_calls": dict(calls),
        "replayed_per_trial": sum(r["replayed"] for r in results) / finished if finished else None,
        "storage_calls_per_trial": sum(calls.values()) / finished if finished else None,
        "crashed": len(crashes),
        "crashes": crashes[:5],
        "crash_kinds": dict(collections.Counter(c["error"][:120] for c in crashes)),
        "stuck": len(stuck),
        "stacks": next((r["stacks"] for r in results if r["stacks"]), ""),
        "waits": sum(w["waits"] for w in workers.values()),
        "given_back": sum(w["given_back"] for w in workers.values()),
        "log": dict(logs),
        "log_examples": examples,
        "cpu_cores": sum(r["cpu_s"] for r in results) / span if span else None,
        "max_rss_mb": sum(r["max_rss_mb"] for r in results),
        "processes": len(results),
    }


# --------------------------------------------------------------------------------------------
# The doc section.


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.0f} s"


def _label(r: dict[str, Any]) -> str:
    return LABELS[r["case"]["storage"]] + (" (ends itself)" if r.get("proxy_ends_itself") else "")


def _row(r: dict[str, Any]) -> str:
    c = r["case"]
    head = f"| {_label(r)} | {c['workers']} | {c['rate']:.1f} | {r['trial_s']:.1f} s |"
    if "refused" in r:
        return head + f" refused by the connection check ({r['fit']} fit) |" + " |" * (_COLUMNS - 5)
    if "error" in r:
        error = r["error"][:150].replace("|", "/").replace("\n", " ")
        return head + f" did not run: {error} |" + " |" * (_COLUMNS - 5)
    util = f"{r['utilisation'] * 100:.1f}%" if r["utilisation"] is not None else "-"
    conns = "-" if r["connections_max"] is None else str(r["connections_max"])
    done = r["final_states"].get("COMPLETE", 0)
    return (
        head
        + f" {util} | {_ms(r['ask_later_p50'])} / {_ms(r['ask_later_p99'])} | {_ms(r['start_s'])} |"
        + f" {_ms(r['tell_p50'])} / {_ms(r['tell_p99'])} | {conns} | {r['trials_per_s']:.2f} |"
        + f" {r['file_ops_per_min']:.0f} ({r['file_ops_per_trial']:.1f}) | {r['crashed']}"
        + (f", {r['stuck']} still running at the time limit" if r["stuck"] else "")
        + f" | {done}/{r['n_trials']} |"
    )


TABLE_HEAD = (
    "| storage | workers | rate (trials/s) | trial | utilisation | ask p50 / p99 | all started after |"
    " tell p50 / p99 | DB connections (max) | trials/s | file ops/min (per trial) | crashed |"
    " COMPLETE |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)
_COLUMNS = TABLE_HEAD.splitlines()[0].count("|") - 1


def render(results: list[dict[str, Any]], args: argparse.Namespace, total_s: float) -> str:
    rows = "\n".join(_row(r) for r in results)
    notes = "\n".join(f"- {n}" for n in _notes(results))
    model = capacity_model(results)
    by_rate: dict[float, set[int]] = collections.defaultdict(set)
    for r in results:
        by_rate[round(r["case"]["rate"], 1)].add(r["case"]["workers"])
    sizes = "; ".join(
        f"{', '.join(str(w) for w in sorted(ws))} workers at {rate} trials/s"
        for rate, ws in sorted(by_rate.items())
    )
    return (
        "## Scale\n\n"
        "`python benchmarks/scale.py` runs the real worker path (`Worker.run`: budget, claim lock, ask/tell, "
        "records, CSV, owner files, sweeps) for each storage at "
        f"{sizes} (the default: the faster rate at fewer sizes, for time), each worker a thread, "
        f"{args.threads_per_process} threads per process, each worker with its own database connection "
        "or proxy client; "
        + (
            "journal storages (file, Redis) one per process, shared by its threads (one replay of the "
            "journal per process: see below). "
            if not args.journal_per_worker
            else "journal storages one per worker. "
        )
        + "The objective suggests one "
        "parameter and sleeps for the trial length, "
        "workers / rate, so the study runs at the rate of 2,000 workers with 10-minute trials "
        f"(3.3 trials/s) or ten times that; each worker runs {args.trials_per_worker} trials "
        "(`n_trials` = workers x that), RandomSampler. All workers start together.\n\n"
        "Utilisation: time in `train` summed over the workers, over workers x span (from the start, all "
        "workers built, to the last worker's exit: the start, where every worker claims at once, and the "
        "end, where workers that are done wait for the last trials, are in it). Ask: the worker's claim "
        "(budget check, `study.ask`, owner file, under the study's claim lock), each worker's first claim "
        "left out (those queue at the start; 'all started after' is when the last worker's first trial "
        "began). DB connections: the server's own count (`pg_stat_activity`, "
        "`information_schema.processlist`, Redis `CLIENT LIST`) of the connections whose client port is "
        "one of the benchmark's, sampled each second. File ops: calls that touch `save_path` (file locks "
        "taken, owner files written, read and removed, CSV rows, sweep turns, and for the journal file "
        "Optuna's reads, appends and lock files), per minute of the run and per finished trial.\n\n"
        "What the simulation changes. Every trial is equally long and all workers start together, so "
        "claims come in waves of all the workers at once, each wave a queue at the claim lock: the worst "
        "case, where a study whose trials vary in length spreads its claims out. The workers' own CPU "
        "(each replays the journal, parses replies) is the benchmark's few cores, not one node each: "
        "a thousand threads each replaying every journal entry would starve the thread that holds the "
        "claim lock, which measures the benchmark machine, so the threads of a process share one "
        "journal storage (Optuna's journal storage is made for threads: each is its own journal worker), "
        "and the replay load that a study of separate nodes puts on its file system is in the capacity "
        "model below. "
        "gRPC clients in one process share one TCP connection to the proxy, so the proxy sees a few "
        "connections, not one per worker. The proxy's own exit once every trial is finished is turned "
        "off (`--proxy-ends-itself` keeps it), as workers still queued at the claim lock then wait for a "
        "proxy that is gone (see below).\n\n"
        f"{TABLE_HEAD}\n{rows}\n\n"
        f"{notes}\n\n"
        f"{model}\n\n"
        f"Measured {datetime.date.today()} on {platform.machine()}, Python {platform.python_version()}, "
        f"Optuna {optuna.__version__}, {len(os.sched_getaffinity(0))} CPU cores shared with the "
        f"databases, the proxy and other work (other test suites, which also stop and restart the database "
        f"servers: the load average is in the notes); the runs took {total_s / 60:.0f} minutes.\n"
    )


#: Crashes seen in these runs, and what caused them.
KNOWN_CRASHES = {
    "UpdateFinishedTrialError": (
        "(a sweep, working from the RUNNING trials it had read at its start, took a trial that had "
        "finished since for an orphan and wrote its fail record onto it; sweeps now read the trial's "
        "state again first)"
    ),
    "Resource deadlock avoided": (
        "(the kernel's deadlock check on POSIX locks, which counts processes, not threads; file locks "
        "now wait it out)"
    ),
}


def _without_folders(message: str) -> str:
    """A logged message with the benchmark's temporary study folders named by what they are.

    >>> _without_folders("could not write it in /x/scale-bench-ab12/journal-64-3.3/repro:")
    "could not write it in the case's save_path:"
    """
    return re.sub(r"\S*/scale-bench-[^/\s]+/[^\s:]*", "the case's save_path", message)


def _notes(results: list[dict[str, Any]]) -> list[str]:
    """What the table does not show: CPU of the simulation, stuck or crashed workers, warnings."""
    notes = []
    for r in results:
        if "utilisation" not in r:
            continue
        c = r["case"]
        where = f"{_label(r)}, {c['workers']} workers at {c['rate']:.1f} trials/s"
        parts = [
            f"claim lock held p50 {_ms(r['claim_hold_p50'])}, p99 {_ms(r['claim_hold_p99'])}",
            f"{r['storage_calls_per_trial']:.1f} storage calls per trial",
            f"worker processes used {r['cpu_cores']:.2f} cores, {r['max_rss_mb']:.0f} MB",
        ]
        if r.get("proxy_cpu_s") is not None and r["span_s"]:
            parts.append(f"the proxy {r['proxy_cpu_s'] / r['span_s']:.2f} cores")
        if r.get("journal_lock_wait_p99") is not None:
            parts.append(f"the journal's append lock waited for p99 {_ms(r['journal_lock_wait_p99'])}")
        if r.get("proxy_restarts"):
            parts.append(f"the proxy ended and was restarted {r['proxy_restarts']} times")
        if r.get("proxy_ends_itself"):
            parts.append(
                "the proxy left as soon as every trial was finished, while workers were still queued at the "
                "claim lock to learn it; each, in turn, waited for a proxy inside the lock (a local run "
                "restarts the proxy, which leaves again within 10 s; on a cluster nothing restarts it and "
                "each queued worker waits `optuna.storage_wait_s`)"
            )
        if r.get("load_max") is not None:
            parts.append(f"load average up to {r['load_max']:.1f}")
        if r.get("sampler_failures"):
            first = r["sampler_failures"][0].split(" ", 1)
            parts.append(
                f"**the storage server could not be reached for {len(r['sampler_failures'])} s of it** "
                f"(from {first[0]}: {first[1][:60]}; other work on this machine restarts the servers)"
            )
        if r.get("proxy_clients_max") is not None:
            parts.append(f"{r['proxy_clients_max']} TCP connections to the proxy")
        if r["crashed"]:
            parts.append("crashes: " + "; ".join(f"{n} x {k}" for k, n in r["crash_kinds"].items()))
            parts += [
                why for error, why in KNOWN_CRASHES.items() if any(error in k for k in r["crash_kinds"])
            ]
        if r["stuck"]:
            parts.append(
                f"stopped at its time limit, {r['span_s']:.0f} s after the start, {r['stuck']} workers still "
                f"running (utilisation over that time)"
            )
        bad = {k: n for k, n in r["log"].items() if not k.startswith("INFO")}
        if bad:
            parts.append(
                "logged: "
                + "; ".join(
                    f"{n} x {_without_folders(k)}" for k, n in sorted(bad.items(), key=lambda kv: -kv[1])[:3]
                )
            )
        notes.append(f"{where}: " + ", ".join(parts) + ".")
    return notes


#: The sizes the model is taken to, with 10-minute trials.
PROJECTED = (2000, 10000)
PROJECTED_TRIAL_S = 600.0
#: What one Redis server answers, GETs per second: the order of magnitude of redis-benchmark.
REDIS_GETS_PER_S = 100_000


def _claim_cost(storage: str, rows: list[dict[str, Any]]) -> tuple[float, float]:
    """``(a, b)``: the claim lock is held about ``a + b x trials in the study`` seconds.

    Through the proxy, ``a`` and ``b`` are fitted to the hold times (p50) measured at each study
    size, since the proxy's reads of the study are what could grow with it. Elsewhere ``a`` is
    the least p50 measured, the case where claims queued least and the machine was least busy.
    """
    points = [(r["n_trials"] / 2, r["claim_hold_p50"]) for r in rows if r["claim_hold_p50"]]
    if storage == "proxy" and points:
        return _fit(points)
    return (min(y for _, y in points) if points else 0.0), 0.0


def _fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares ``(a, b)`` of ``y = a + b x``; a flat line through one point."""
    if len(points) < 2 or len({x for x, _ in points}) < 2:
        return (statistics.mean(y for _, y in points), 0.0)
    slope, intercept = statistics.linear_regression([x for x, _ in points], [y for _, y in points])
    return (max(0.0, intercept), max(0.0, slope))


def _journal_readers(result: dict[str, Any]) -> int:
    """How many journal storages replayed the study in a case: one per worker, or per process."""
    return int(result["processes"] if result.get("shared_journal") else result["case"]["workers"])


def capacity_model(results: list[dict[str, Any]]) -> str:
    """Per-trial costs measured, taken to 2,000 and 10,000 workers (10-minute trials).

    Claims are serial (the claim lock), so a study's trial rate is at most 1 / (claim lock hold
    time). The hold time is fitted against the study's size (trials in it while it ran), since
    through the proxy each ask reads every trial of the study. Journal storages make every worker
    read every entry: that load grows with workers x rate.
    """
    ran = [r for r in results if r.get("utilisation") is not None and not r.get("proxy_ends_itself")]
    conclusions: list[str] = []
    lines = [
        "### Capacity model",
        "",
        "Every claim (budget check, ask, owner file) happens under the study's one claim lock, so a "
        "study starts at most 1 / (claim lock hold time) trials per second, however many workers it has; "
        "a worker that finds the lock busy waits. The hold time is the least p50 measured (where claims "
        "queued least); through the proxy it is fitted against the study's size, since each `study.ask` "
        "makes the proxy read the study (Optuna's `GetTrials`, for the queue of waiting trials: from its "
        "cache of finished trials, and from PostgreSQL for the new and unfinished ones) and send the "
        "worker every trial not yet finished, so a read grows with the trials running, which here grow "
        "with the study (half of it runs at once). With the journal file and Redis every worker "
        "reads every entry any worker writes, once: that load is workers x entries per trial x rate. "
        "Projected below for 10-minute trials (2,000 workers start 3.3 trials/s, 10,000 workers "
        "16.7 trials/s) and a study of 10 trials per worker, so 5 per worker in it on average.",
        "",
        "| storage | a trial costs | claim lock held (fit) | "
        + " | ".join(f"{w:,} workers ({w / PROJECTED_TRIAL_S:.1f} trials/s)" for w in PROJECTED)
        + " |",
        "|---|---|---|" + "---|" * len(PROJECTED),
    ]
    for storage in STORAGES:
        rows = [r for r in ran if r["case"]["storage"] == storage]
        refused = [r for r in results if r["case"]["storage"] == storage and "refused" in r]
        if not rows:
            continue
        calls = statistics.median(r["storage_calls_per_trial"] for r in rows)
        files = statistics.median(r["file_ops_per_trial"] for r in rows)
        # Each journal storage replays every entry once: one per process where threads share one.
        entries = statistics.median(r["replayed_per_trial"] / _journal_readers(r) for r in rows)
        cost = f"{calls:.0f} storage calls, {files:.0f} file ops"
        if entries > 0.5:
            cost += f", {entries:.1f} journal entries that every worker reads"
        a, b = _claim_cost(storage, rows)
        hold = f"{a * 1000:.0f} ms" + (f" + {b * 1e6:.2f} ms per 1,000 trials" if b > 0 else "")
        cells = []
        for workers in PROJECTED:
            rate = workers / PROJECTED_TRIAL_S
            size = workers * 10 / 2
            held = a + b * size
            busy = rate * held
            parts = []
            if storage in ("postgresql", "mysql"):
                fit = min((r["fit"] for r in refused if r.get("fit") is not None), default=None)
                parts.append(
                    f"needs {workers:,} connections" + (f" ({fit} fit here)" if fit is not None else "")
                )
            at = f" at {size:,.0f} trials" if b > 0 else ""
            parts.append(
                f"saturated: the claim lock allows {1 / held:.1f} trials/s{at}"
                if busy >= 1
                else f"claim lock busy {busy * 100:.0f}% of the time{at}"
            )
            if entries > 0.5:
                reads = workers * entries * rate
                parts.append(f"{reads:,.0f} entries read/s in all")
                if storage == "redis":
                    parts.append(f"{reads / REDIS_GETS_PER_S:.1f}x what one Redis serves (1 GET each)")
            if storage == "proxy":
                parts.append("4 database connections")
            cells.append("; ".join(parts))
        lines.append(f"| {LABELS[storage]} | {cost} | {hold} | " + " | ".join(cells) + " |")
        conclusions.append(_saturation(storage, a, b, entries, refused, rows))
    return "\n".join([*lines, "", *(f"- {c}" for c in conclusions if c), "", _verdict(ran)])


def _saturation(
    storage: str,
    a: float,
    b: float,
    entries: float,
    refused: list[dict[str, Any]],
    rows: list[dict[str, Any]],
) -> str:
    """Where a storage stops keeping up, from its fitted claim cost and its re-read load."""
    label = LABELS[storage]
    out = []
    if storage in ("postgresql", "mysql"):
        fit = min((r["fit"] for r in refused if r.get("fit") is not None), default=None)
        out.append(
            f"{label} needs one connection per worker: here {fit} fit"
            if fit is not None
            else f"{label} needs one connection per worker"
        )
    if b > 0:
        sizes = [(rate, (1 / rate - a) / b) for rate in (2000 / PROJECTED_TRIAL_S, 10000 / PROJECTED_TRIAL_S)]
        out.append(
            f"{label}: claims get slower as the study grows; the claim lock is busy all the time at "
            + " and ".join(
                f"{rate:.1f} trials/s once the study holds about {max(0, n):,.0f} trials" for rate, n in sizes
            )
        )
    elif a > 0:
        out.append(
            f"{'at' if out else label + ': at'} most about {1 / a:.0f} claims/s through the claim lock alone"
        )
    waits = [r for r in rows if r.get("journal_lock_wait_p99")]
    if waits:
        worst = max(waits, key=lambda r: r["journal_lock_wait_p99"])
        out.append(
            "the journal file's append lock (a POSIX record lock, held for one append and its fsync) "
            f"queued for p99 {_ms(worst['journal_lock_wait_p99'])} at "
            f"{worst['case']['workers']} workers, {worst['case']['rate']:.1f} trials/s, where a wave of "
            f"{worst['case']['workers']} tells and claims came at once; the claim lock's holder waits for "
            "it too"
        )
    if entries > 0.5:
        # Every worker reads every entry: workers x entries x (workers / trial length) entries/s.
        limit = math.sqrt(REDIS_GETS_PER_S * PROJECTED_TRIAL_S / entries)
        if storage == "redis":
            out.append(
                f"one Redis server (about {REDIS_GETS_PER_S:,} GETs/s) serves the re-reads of about "
                f"{limit:,.0f} workers with 10-minute trials (one GET per entry per worker)"
            )
        else:
            out.append(
                "each worker re-reads the entries of every trial of the study (the file's new part, once a "
                "trial): with 10-minute trials that is "
                + ", ".join(f"{w * entries * w / PROJECTED_TRIAL_S:,.0f} entries/s" for w in PROJECTED)
                + " across the file system for "
                + " and ".join(f"{w:,}" for w in PROJECTED)
                + " workers; the writes (a lock, an append and an fsync each) do not grow with workers"
            )
    return "; ".join(out) + "." if out else ""


#: Where a wave of claims and tells waits, by storage.
QUEUES = {
    "journal": "the claim lock and at the journal file's append lock",
    "redis": "the claim lock and at the replay of the Redis journal (a GET per entry)",
    "proxy": "the claim lock, behind the proxy's reads of the whole study",
}


def _verdict(ran: list[dict[str, Any]]) -> str:
    """The issue's acceptance line: utilisation at 1,000 workers or more, 3.3 trials/s."""
    big = [r for r in ran if r["case"]["workers"] >= 1000 and abs(r["case"]["rate"] - 2000 / 600) < 0.05]
    if not big:
        return "No case of 1,000 workers or more at 3.3 trials/s ran."
    figures = ", ".join(
        f"{LABELS[r['case']['storage']]} {r['utilisation'] * 100:.1f}%"
        for r in sorted(big, key=lambda r: -r["utilisation"])
    )
    best = max(big, key=lambda r: r["utilisation"])
    met = "met" if best["utilisation"] >= 0.95 else "not met"
    ideal = best["case"]["trials_per_worker"] * best["trial_s"]
    label, n, trial_s = LABELS[best["case"]["storage"]], best["n_trials"], best["trial_s"]
    return (
        f"**Utilisation at {best['case']['workers']:,} workers, 3.3 trials/s:** {figures}. The target of "
        f"95% is {met} by the best of them ({label}): its {n:,} trials of {trial_s:.0f} s took "
        f"{best['span_s']:.0f} s where {ideal:.0f} s would do. The last worker's first trial began "
        f"{best['start_s']:.0f} s after the start; between two trials of a worker (tell, CSV row, claim, "
        f"suggest) p50 {_ms(best['gap_p50'])}, p99 {_ms(best['gap_p99'])}, as each wave of claims and "
        f"tells queued at {QUEUES.get(best['case']['storage'], 'the claim lock')}; the rest is the end, "
        "where workers done wait for the last trials."
    )


# --------------------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--workers", type=_ints, default=[64, 256, 1000], help="sizes (default 64,256,1000)")
    parser.add_argument("--storages", type=lambda s: s.split(","), default=list(STORAGES))
    parser.add_argument(
        "--rates", type=_floats, default=list(DEFAULT_RATES), help="trials/s (default 3.33,33.3)"
    )
    parser.add_argument(
        "--fast-workers",
        type=_ints,
        default=[64, 256],
        help="sizes run at rates above 10 trials/s (default 64,256)",
    )
    parser.add_argument("--trials-per-worker", type=int, default=2)
    parser.add_argument("--threads-per-process", type=int, default=250)
    parser.add_argument("--postgresql", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--mysql", default="mysql://root@127.0.0.1:3306/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/11", help="a database of its own")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    parser.add_argument(
        "--proxy-ends-itself",
        action="store_true",
        help="let the proxy leave once the study is done, as it does in a real run (and restart it)",
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        help="write the section from --json files of earlier runs (later files' cases replace earlier ones)",
    )
    parser.add_argument(
        "--max-case-s", type=float, default=None, help="stop a case this long after its start (reported)"
    )
    parser.add_argument(
        "--journal-per-worker",
        action="store_true",
        help="each worker thread replays the journal itself (default: one replay per process)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the study folders (printed)")
    parser.add_argument("--smoke", action="store_true", help="a tiny run of every storage, for the tests")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.workers, args.rates, args.trials_per_worker, args.fast_workers = [6], [15.0], 2, [6]
    unknown = set(args.storages) - set(STORAGES)
    if unknown:
        parser.error(f"unknown storages {sorted(unknown)}; choose from {', '.join(STORAGES)}")
    return args


def _key(result: dict[str, Any]) -> tuple[str, int, float, bool]:
    c = result["case"]
    return (c["storage"], c["workers"], round(c["rate"], 1), bool(result.get("proxy_ends_itself")))


def _merge(saved: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], float]:
    """The cases of several runs, each from the last run that has it, by rate, size and storage."""
    saved = [run if isinstance(run, dict) else {"results": run, "total_s": 0.0} for run in saved]
    merged = {_key(result): result for run in saved for result in run["results"]}
    rank = {storage: i for i, storage in enumerate(STORAGES)}
    ordered = sorted(merged.values(), key=lambda r: (_key(r)[2], _key(r)[1], rank[_key(r)[0]], _key(r)[3]))
    return ordered, sum(run["total_s"] for run in saved)


def cases(args: argparse.Namespace) -> list[Case]:
    out = []
    for rate in args.rates:
        sizes = args.workers if rate <= 10 else [w for w in args.workers if w in args.fast_workers]
        for workers in sizes:
            out.extend(Case(s, workers, rate, args.trials_per_worker) for s in args.storages)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        return child_main(args.child)
    if args.from_json:  # the section again, from the figures of earlier runs
        merged, total_s = _merge([json.loads(path.read_text()) for path in args.from_json])
        write_section(args.output, "scale", render(merged, args, total_s))
        return 0
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.basicConfig(level=logging.WARNING)
    # The worker processes and the proxy import this tree's package.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    urls = {"postgresql": args.postgresql, "mysql": args.mysql, "redis": args.redis}
    if "redis" in args.storages:
        import redis

        if redis.Redis.from_url(args.redis).dbsize():
            print(
                f"{args.redis} holds keys; give the benchmark an empty Redis database (--redis)",
                file=sys.stderr,
            )
            return 2
    root = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    started = time.time()
    results = []
    try:
        for case in cases(args):
            print(
                f"{case.slug}: {case.workers} workers, {case.trial_s:.1f} s trials, {case.n_trials} trials",
                flush=True,
            )
            try:
                result = run_case(
                    case,
                    urls,
                    root,
                    args.threads_per_process,
                    args.proxy_ends_itself,
                    args.max_case_s,
                    shared_journal=not args.journal_per_worker,
                )
            except Exception as err:
                traceback.print_exc()
                result = {
                    "case": dataclasses.asdict(case),
                    "trial_s": case.trial_s,
                    "error": f"{type(err).__name__}: {err}",
                }
            results.append(result)
            print("  " + _row(result), flush=True)
            if args.json:
                saved = {"results": results, "total_s": time.time() - started}
                args.json.write_text(json.dumps(saved, indent=1, default=str))
    finally:
        if args.keep:
            print(f"study folders kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    write_section(args.output, "scale", render(results, args, time.time() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())

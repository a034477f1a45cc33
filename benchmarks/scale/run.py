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
asks them, whether the workers fit (``aimlutils.hyper_opt.storage.capacity``); a case that does not fit
is reported as refused, not run.

    python -m benchmarks.scale                      # the full set, about an hour
    python -m benchmarks.scale --workers 64 --storages journal,redis --rates 33
    python -m benchmarks.scale --smoke --output /tmp/b.md --json /tmp/b.json   # about 30 s

The Redis database (``--redis``, default db 11) must hold nothing else: it is emptied before and
after each Redis case, since Optuna's Redis journal keeps all studies in one log.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna

from aimlutils.hyper_opt.api import open_study, read_config
from aimlutils.hyper_opt.config import RunConfig
from aimlutils.hyper_opt.launchers import save_run_configs
from aimlutils.hyper_opt.launchers.local_proxy import LocalProxy
from aimlutils.hyper_opt.lifeline import Lifeline
from aimlutils.hyper_opt.storage import capacity, open_for_command
from aimlutils.hyper_opt.storage.proxy import ProxyAddress, answers
from benchmarks.common.doc import write_section
from benchmarks.scale.report import STORAGES, render, table_row
from benchmarks.scale.worker_process import SleepObjective

ROOT = Path(__file__).resolve().parents[2]

#: What each worker process runs (``python -m``; ``PYTHONPATH`` has this tree).
WORKER_PROCESS = "benchmarks.scale.worker_process"
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
    if cfg.storage.storage_kind.holds_connections:  # a server's study outlives the case's folder
        with contextlib.suppress(Exception):
            optuna.delete_study(study_name=cfg.study_name, storage=cfg.storage.location)


#: The proxy's own code, with its end-of-study exit turned off (see ``--proxy-ends-itself``).
_STAYING_PROXY = (
    "import sys, aimlutils.hyper_opt.launchers.proxy_server as proxy\n"
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
    holds_connections = cfg.storage.storage_kind.holds_connections
    if not holds_connections:  # a journal: shared by a process's workers (worker_process.py)
        out["shared_journal"] = shared_journal
    if holds_connections:
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
    open_study(cfg, case.workers)
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
                        [sys.executable, "-m", WORKER_PROCESS, str(folder / f"spec-{p}.json")],
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


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale", description=(__doc__ or "").split("\n")[0]
    )
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
    if args.from_json:  # the section again, from the figures of earlier runs
        merged, total_s = _merge([json.loads(path.read_text()) for path in args.from_json])
        write_section(args.output, "scale", render(merged, args, total_s))
        return 0
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.basicConfig(level=logging.WARNING)
    # The worker processes and the proxy import this tree's package and benchmarks.
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
            print("  " + table_row(result), flush=True)
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

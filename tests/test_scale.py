"""Many workers on one database: one connection per worker, a check before anything starts, and
the storage proxy (no connection per worker, its death survived). Real PostgreSQL and MariaDB."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
import pymysql
import pytest
import yaml
from optuna.trial import TrialState

from aimlutils.hyper_opt.storage import open_storage, parse_storage, study_exists
from tests.conftest import service_url
from tests.test_local_run import load_study, start_optimize, states

T = TypeVar("T")

# They count the database's connections and fill it with workers: no other test may use it meanwhile.
pytestmark = pytest.mark.exclusive


def _pg_connections(prefix: str) -> dict[str, int]:
    """``{application_name: connections}`` of this test's processes, from pg_stat_activity."""
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
        rows = conn.execute(
            "SELECT application_name, count(*) FROM pg_stat_activity "
            "WHERE application_name LIKE %s GROUP BY application_name",
            (prefix + "%",),
        ).fetchall()
    return {name: n for name, n in rows}


def _watch_until_done(
    proc: subprocess.Popen[str], sample: Callable[[], T], deadline_s: float = 300
) -> list[T]:
    """Call ``sample()`` while optimize.py runs; its results, once optimize.py exits."""
    seen = []
    deadline = time.monotonic() + deadline_s
    while proc.poll() is None and time.monotonic() < deadline:
        seen.append(sample())
        time.sleep(0.2)
    proc.wait(timeout=60)
    return seen


def test_each_worker_holds_at_most_one_postgresql_connection(study_files):
    url = service_url("postgresql")
    hyper, model = study_files(test={"sleep": 0.3, "steps": 4}, storage=url, n_trials=18)
    proc = start_optimize(hyper, model, "--workers", "6")
    samples = _watch_until_done(proc, lambda: _pg_connections("aimlutils worker"))
    out = proc.stdout.read() if proc.stdout else ""
    assert proc.returncode == 0, out
    names = {name for sample in samples for name in sample}
    assert len(names) >= 2, samples  # several workers were seen holding their connection
    assert max(n for sample in samples for n in sample.values()) == 1  # never two for one worker
    assert states(load_study(hyper, model)) == {"COMPLETE": 18}


def test_each_worker_holds_at_most_one_mysql_connection(study_files):
    url = service_url("mysql")

    def connections() -> int:
        with pymysql.connect(host="127.0.0.1", user="root", database="test") as conn, conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM information_schema.processlist WHERE db = 'test'")
            return int(cur.fetchone()[0]) - 1  # not this one

    before = connections()
    hyper, model = study_files(test={"sleep": 0.3, "steps": 4}, storage=url, n_trials=12)
    proc = start_optimize(hyper, model, "--workers", "4")
    samples = _watch_until_done(proc, connections)
    assert proc.returncode == 0, proc.stdout.read() if proc.stdout else ""
    # Four workers with one each, and optimize.py's own two (progress, recovery).
    assert max(samples) - before <= 4 + 2, samples


def test_more_workers_than_the_database_allows_are_refused_before_anything_starts(study_files, tmp_path):
    url = service_url("postgresql")
    hyper, model = study_files(storage=url, n_trials=500)
    proc = start_optimize(hyper, model, "--workers", "300")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out
    assert "allows 100 connections" in out and "300 workers need one each" in out
    assert "Start at most" in out and "optuna.proxy: true" in out
    assert not (tmp_path / "results" / "workers").exists()  # no worker started
    storage = open_storage(parse_storage(url, None, tmp_path, tmp_path))
    assert not study_exists(storage, yaml.safe_load(hyper.read_text())["optuna"]["name"])  # nor made


def test_the_connection_check_counts_optimize_pys_own_connections_once(study_files):
    # optimize.py has its storage open when it checks: those connections are its own two, not
    # others' in use. Counted twice, 96 workers would not fit an idle stock PostgreSQL.
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
        limit = int(conn.execute("SHOW max_connections").fetchone()[0])
        query = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
        others = conn.execute(query).fetchone()[0] - 1  # not this one
    hyper, model = study_files(storage=service_url("postgresql"), n_trials=500)
    proc = start_optimize(hyper, model, "--workers", "300")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out
    found = re.search(r"allows (\d+) connections \((\d+) in use\): room for (\d+)", out)
    assert found, out
    assert (int(found[1]), int(found[2]), int(found[3])) == (limit, others, limit - others)
    assert f"Start at most {limit - others - 2} workers" in " ".join(out.split())


def test_the_proxy_needs_a_database(study_files):
    hyper, model = study_files(proxy=True)
    proc = start_optimize(hyper, model)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out
    assert "optuna.proxy: the storage proxy fronts PostgreSQL or MySQL" in out


def test_workers_through_the_proxy_hold_no_connection_and_outlive_its_death(study_files, tmp_path):
    url = service_url("postgresql")
    hyper, model = study_files(test={"sleep": 0.4, "steps": 3}, storage=url, n_trials=24, proxy=True)
    proc = start_optimize(hyper, model, "--workers", "6")
    address_file = tmp_path / "results" / "proxy.json"
    study = None
    killed = None
    samples = []
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        samples.append(_pg_connections("aimlutils "))
        if killed is None and address_file.exists():
            study = study or load_study(hyper, model)
            if sum(t.state == TrialState.COMPLETE for t in study.get_trials()) >= 6:
                killed = json.loads(address_file.read_text())["pid"]
                os.kill(killed, signal.SIGKILL)  # a proxy that dies mid-study
        time.sleep(0.2)
    proc.wait(timeout=60)
    out = proc.stdout.read() if proc.stdout else ""
    assert proc.returncode == 0, out
    assert killed is not None, "the study ended before the proxy could be killed"
    workers = [n for s in samples for name, n in s.items() if name.startswith("aimlutils worker")]
    proxies = [n for s in samples for name, n in s.items() if name.startswith("aimlutils proxy")]
    assert workers == []  # the workers reached the database only through the proxy
    assert proxies and max(proxies) <= 4  # optuna.proxy.connections
    final = states(load_study(hyper, model))
    assert final.get("COMPLETE", 0) + final.get("PRUNED", 0) == 24 and "RUNNING" not in final, final
    log = (tmp_path / "results" / "workers" / "proxy.log").read_text()
    assert "listening at" in log and log.count("listening at") >= 2  # a new proxy took over

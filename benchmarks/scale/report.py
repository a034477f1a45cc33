"""The doc section of the scale benchmark: the table, the notes on what the runs showed, and the
capacity model that takes the measured costs to sizes this machine cannot run."""

from __future__ import annotations

import argparse
import collections
import datetime
import math
import os
import platform
import re
import statistics
from typing import Any

import optuna

STORAGES = ("journal", "postgresql", "proxy", "mysql", "redis")
LABELS = {
    "journal": "journal file",
    "postgresql": "PostgreSQL direct",
    "proxy": "PostgreSQL + proxy",
    "mysql": "MariaDB direct",
    "redis": "Redis journal",
}


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.0f} s"


def _label(r: dict[str, Any]) -> str:
    return LABELS[r["case"]["storage"]] + (" (ends itself)" if r.get("proxy_ends_itself") else "")


def table_row(r: dict[str, Any]) -> str:
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
    rows = "\n".join(table_row(r) for r in results)
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
        "`python -m benchmarks.scale` runs the real worker path (`Worker.run`: budget, claim lock, ask/tell, "
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
        "began). Tell: the end of a completed trial (`TrialLife.finish`: the tell, with the trial's record "
        "in the same write, its owner file removed, its CSV row). DB connections: the server's own count "
        "(`pg_stat_activity`, "
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

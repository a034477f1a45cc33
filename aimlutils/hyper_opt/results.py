"""``trial_results.csv``: one row per finished trial, written by many workers at once.

The study is the source of truth: a row is a function of the stored trial alone, so the file can
be rebuilt from the study at any time (:func:`export_csv`).
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from aimlutils.hyper_opt.base_objective import RESULTS_ATTR

#: Trial user attributes the worker sets.
WORKER_ATTR = "worker"
FAIL_REASON_ATTR = "fail_reason"

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
_HEAD = ["trial", "state", "value"]
_TAIL = ["duration_s", "datetime_start", "datetime_complete", "worker", "host", "pid", "job_id", "fail_reason"]


def trial_row(trial: FrozenTrial) -> dict[str, Any]:
    """The CSV row of a finished trial: number, state, value, parameters, results, timing, worker."""
    row: dict[str, Any] = {"trial": trial.number, "state": trial.state.name}
    # Pruned trials keep their last intermediate value, so a row shows how far they got.
    row["value"] = trial.value if trial.values is not None and len(trial.values) == 1 else None
    row.update(trial.params)
    for key, value in (trial.user_attrs.get(RESULTS_ATTR) or {}).items():
        row[key if key not in row else f"result_{key}"] = value
    start, end = trial.datetime_start, trial.datetime_complete
    row["duration_s"] = round((end - start).total_seconds(), 3) if start and end else None
    row["datetime_start"] = start.isoformat() if start else None
    row["datetime_complete"] = end.isoformat() if end else None
    worker = trial.user_attrs.get(WORKER_ATTR) or {}
    row.update({k: worker.get(k) for k in ("worker", "host", "pid", "job_id")})
    row["fail_reason"] = trial.user_attrs.get(FAIL_REASON_ATTR)
    return row


def _header(existing: list[str], new_keys: Iterable[str]) -> list[str]:
    middle = [k for k in existing if k not in _HEAD and k not in _TAIL]
    middle += [k for k in new_keys if k not in middle and k not in _HEAD and k not in _TAIL]
    return _HEAD + middle + _TAIL


def _write(fh: io.TextIOBase, header: list[str], rows: Iterable[Mapping[str, Any]]) -> None:
    writer = csv.DictWriter(fh, header, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)


def append_row(path: Path, row: Mapping[str, Any]) -> None:
    """Append ``row`` under an exclusive lock; rewrite the file when the row brings new columns.

    ``lockf`` locks (POSIX record locks) also hold across nodes on NFS, where ``flock`` may not.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    with os.fdopen(fd, "r+", newline="", encoding="utf-8") as fh:
        fcntl.lockf(fh, fcntl.LOCK_EX)
        try:
            first = fh.readline()
            header = next(csv.reader([first])) if first.strip() else []
            if header and set(row) <= set(header):
                fh.seek(0, os.SEEK_END)
                csv.DictWriter(fh, header).writerow(row)
            else:
                fh.seek(0)
                rows = list(csv.DictReader(fh)) if header else []
                rows.append(dict(row))
                fh.seek(0)
                fh.truncate()
                _write(fh, _header(header, [k for r in rows for k in r]), rows)
            fh.flush()
        finally:
            fcntl.lockf(fh, fcntl.LOCK_UN)


def export_csv(study: optuna.Study, path: Path) -> int:
    """Rewrite ``path`` from the study (under the same lock workers use); returns the row count."""
    rows = [trial_row(t) for t in study.get_trials(deepcopy=False, states=FINISHED)]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    with os.fdopen(fd, "r+", newline="", encoding="utf-8") as fh:
        fcntl.lockf(fh, fcntl.LOCK_EX)
        try:
            fh.truncate()
            _write(fh, _header([], [k for r in rows for k in r]), rows)
            fh.flush()
        finally:
            fcntl.lockf(fh, fcntl.LOCK_UN)
    return len(rows)

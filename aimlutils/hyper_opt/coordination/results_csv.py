"""``trial_results.csv``: one row per finished trial, written by many workers at once.

The study is the source of truth: a row is a function of the stored trial alone, so the file can
be rebuilt from the study at any time (:meth:`ResultsCsv.export`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from aimlutils.hyper_opt.coordination.records import APPLIED_ATTR, RETRY_OF_ATTR, read_record
from aimlutils.hyper_opt.coordination.usage import trial_gpu_hours
from aimlutils.hyper_opt.storage.locks import FileLock

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
_HEAD = ["trial", "state", "value"]
_WORKER = ["worker", "host", "node", "gpu", "pid", "job_id"]
_TAIL = [
    "duration_s",
    "gpu_hours",
    "datetime_start",
    "datetime_complete",
    *_WORKER,
    "continues",
    "fail_reason",
]
#: Bytes read to find the header line (a longer header takes the slower way through a text file).
_HEADER_READ = 1 << 16


def trial_row(trial: FrozenTrial) -> dict[str, Any]:
    """The CSV row of a finished trial: number, state, value, parameters, results, timing, worker,
    the trial it continues."""
    row: dict[str, Any] = {"trial": trial.number, "state": trial.state.name}
    # Pruned trials keep their last intermediate value, so a row shows how far they got.
    row["value"] = trial.value if trial.values is not None and len(trial.values) == 1 else None
    row.update(trial.params)
    applied = trial.user_attrs.get(APPLIED_ATTR)
    row.update({f"applied.{k}": v for k, v in (applied if isinstance(applied, dict) else {}).items()})
    record = read_record(trial)
    for key, value in (record.get("results") or {}).items():
        row[key if key not in row else f"result_{key}"] = value
    start, end = trial.datetime_start, trial.datetime_complete
    row["duration_s"] = round((end - start).total_seconds(), 3) if start and end else None
    # Wall time x the GPUs its worker had (CUDA_VISIBLE_DEVICES): what the allocation paid.
    row["gpu_hours"] = round(trial_gpu_hours(trial, 0, end), 6) if start and end else None
    row["datetime_start"] = start.isoformat() if start else None
    row["datetime_complete"] = end.isoformat() if end else None
    worker = record.get("worker") or {}
    row.update({k: worker.get(k) for k in _WORKER})
    # The interrupted trial this one continued (its checkpoint, its learning curve), if any.
    row["continues"] = trial.user_attrs.get(RETRY_OF_ATTR)
    row["fail_reason"] = record.get("fail_reason")
    return row


def _header(existing: list[str], new_keys: Iterable[str]) -> list[str]:
    middle = [k for k in existing if k not in _HEAD and k not in _TAIL]
    middle += [k for k in new_keys if k not in middle and k not in _HEAD and k not in _TAIL]
    return _HEAD + middle + _TAIL


class ResultsCsv:
    """``trial_results.csv`` opened once by a worker; every write happens under an exclusive lock.

    The lock (:class:`~aimlutils.hyper_opt.storage.locks.FileLock`, on ``trial_results.csv.lock``)
    holds across nodes and threads. The file is rewritten in place, never replaced, so a lock
    always covers the file others see.

    Example:
        >>> import tempfile
        >>> with ResultsCsv(Path(tempfile.mkdtemp()) / "t.csv") as out:
        ...     out.append({"trial": 0, "state": "COMPLETE", "value": 0.5, "lr": 0.1})
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = FileLock(path.with_name(path.name + ".lock"), data=path)
        self._lock.create()  # the file now, so that a reader finds it from the start

    def __enter__(self) -> ResultsCsv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release: the descriptor is the process's, shared with other writers of it."""

    @contextlib.contextmanager
    def _locked(self) -> Iterator[io.TextIOWrapper]:
        with self._lock, self._lock.text() as fh:
            yield fh

    def append(self, row: Mapping[str, Any]) -> None:
        """Append ``row``; rewrite the file with a wider header when the row brings new columns."""
        with self._lock:
            # The usual case in plain reads and writes on the lock's descriptor: the header's
            # columns hold the row's, and the row goes at the end.
            fd = self._lock.fd
            head = os.pread(fd, _HEADER_READ, 0)
            if b"\n" in head:
                header = next(csv.reader([head[: head.index(b"\n") + 1].decode("utf-8")]))
                if set(row) <= set(header):
                    out = io.StringIO()
                    csv.writer(out).writerow([row.get(key, "") for key in header])
                    _write_all(fd, out.getvalue().encode("utf-8"), os.lseek(fd, 0, os.SEEK_END))
                    return
        with self._locked() as fh:
            first = fh.readline()
            header = next(csv.reader([first])) if first.strip() else []
            if header and set(row) <= set(header):
                fh.seek(0, os.SEEK_END)
                csv.DictWriter(fh, header).writerow(row)
                return
            fh.seek(0)
            rows = list(csv.DictReader(fh)) if header else []
            rows.append(dict(row))
            _rewrite(fh, _header(header, [k for r in rows for k in r]), rows)

    def export(self, study: optuna.Study) -> int:
        """Rewrite the file from the study; returns the number of rows."""
        rows = [trial_row(t) for t in study.get_trials(deepcopy=False, states=FINISHED)]
        with self._locked() as fh:
            _rewrite(fh, _header([], [k for r in rows for k in r]), rows)
        return len(rows)


def _write_all(fd: int, data: bytes, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def _rewrite(fh: io.TextIOWrapper, header: list[str], rows: Iterable[Mapping[str, Any]]) -> None:
    fh.seek(0)
    fh.truncate()
    writer = csv.DictWriter(fh, header, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)

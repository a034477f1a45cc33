"""Is the worker that runs a trial still alive? By process id on this host, by job id elsewhere."""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aimlutils.hyper_opt.schedulers import alive
from aimlutils.hyper_opt.storage.locks import FileLock

logger = logging.getLogger(__name__)

#: ``{job id: state}`` of the study's queued and running jobs, from one scheduler call; raises when
#: the scheduler does not answer (a busy controller timing out), which proves nothing.
QueueQuery = Callable[[], dict[str, str]]
#: The job ids a queue answer speaks for: the study's jobs submitted by this user. A job outside
#: them (submitted by a collaborator, or not recorded yet) is never judged gone by its absence.
StudyJobs = Callable[[], Sequence[str]]
#: Whether a job id is among the queue's (a scheduler's own id format decides).
JobAlive = Callable[[str | None, dict[str, str]], bool]
#: How old, by the storage's clock, an unowned trial must be for one look to call it orphaned.
_STORAGE_CLOCK_MARGIN_S = 86400.0
#: Queue states of a job none of whose processes runs: SLURM's after a requeue (node failure,
#: preemption, ``scontrol requeue``), PBS's queued, held and waiting.
WAITING = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "Q", "H", "W"})


def process_is_gone(pid: int | None) -> bool:
    """Whether process ``pid`` of this host has ended (a zombie counts as ended)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a zombie (ended, not yet reaped by its parent) still answers kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


class Liveness:
    """Decides whether a RUNNING trial's owner (host, pid, job id) is gone.

    A process on this host is checked directly. One on another host is gone when its job is no
    longer queued or running, or waits in the queue to run again (it was requeued). The scheduler
    is a shared service: the queue is asked at most once every ``min_interval_s`` seconds, and with
    ``cache`` (a file in ``save_path``) once per interval for all the workers of a study together,
    whoever asks first. ``me`` is the asking worker's identity: a trial of its own job from an
    earlier run of that job (``restarts`` differs) is gone, wherever it ran.

    A queue that does not answer proves nothing: no owner is gone for it, and it is asked again
    at the next interval. ``study_jobs`` (when given) are the jobs an answer speaks for.
    """

    def __init__(
        self,
        queue: QueueQuery | None = None,
        min_interval_s: float = 60.0,
        cache: Path | None = None,
        job_alive: JobAlive = alive,
        me: dict[str, Any] | None = None,
        study_jobs: StudyJobs | None = None,
    ) -> None:
        self.queue, self.study_jobs, self.job_alive = queue, study_jobs, job_alive
        self.min_interval_s, self.cache = min_interval_s, cache
        self.me = me or {}
        self.host = socket.gethostname()
        self._states: dict[str, str] | None = None
        #: When the answer in ``_states`` was given: this host's clock for its own question, the
        #: file system's (the cache's mtime) for a shared one, as the owner files' times are.
        self._asked = -float("inf")
        #: When this process last asked or looked at the cache, by its own clock: intervals are
        #: never measured against another host's clock (one an hour ahead would stop them).
        self._looked = -float("inf")
        self._cache_stamp: object = None
        self._cache_seen = -float("inf")
        self._unowned: dict[int, float] = {}  # trial number: when first seen without an owner
        self._ours: set[str] | None = None  # the numbers of study_jobs, read at _ours_read
        self._ours_read = -float("inf")

    def unowned_for(self, number: int, seconds: float, started: datetime.datetime | None = None) -> bool:
        """Whether trial ``number`` has had no owner file for ``seconds``: by this process's clock
        since it first saw it so, or by a day of the storage's (the clock of whichever host created
        the trial, which may be off by hours, so only a margin that wide is trusted)."""
        now = time.monotonic()
        first = self._unowned.setdefault(number, now)
        if now - first >= seconds:
            return True
        age = (datetime.datetime.now() - started).total_seconds() if started else 0.0
        return age >= max(seconds, _STORAGE_CLOCK_MARGIN_S)

    def _queue_states(self) -> dict[str, str] | None:
        if self.queue is None:
            return None
        if time.monotonic() - self._looked < self.min_interval_s:
            return self._states
        self._looked = time.monotonic()
        if self.cache is None:
            self._states, self._asked = self._ask(), time.time()
            return self._states
        return self._shared_states(self.cache)

    def _ask(self) -> dict[str, str] | None:
        """The queue's answer, or ``None`` when the scheduler did not give one."""
        if self.queue is None:
            return None
        try:
            return self.queue()
        except Exception as err:  # a timeout, a controller down: no verdict, asked again later
            logger.warning("the scheduler's queue did not answer (%s); no trial is judged by it", err)
            return None

    def _shared_states(self, cache: Path) -> dict[str, str] | None:
        lock = FileLock(cache)
        if not lock.acquire(blocking=False):
            return self._states  # another worker is asking right now; use what we had
        try:
            with lock.text() as fh:
                try:
                    data = json.loads(fh.read() or "{}")
                except ValueError:
                    data = {}
                now = time.monotonic()
                if data.get("at") != self._cache_stamp:  # an answer this process had not seen
                    self._cache_stamp, self._cache_seen = data.get("at"), now
                if data.get("at") is None or now - self._cache_seen >= self.min_interval_s:
                    # The same answer for an interval by this host's clock: ask anew.
                    data = {"at": f"{self.host} {os.getpid()} {time.time()}", "states": self._ask()}
                    fh.seek(0)
                    fh.truncate()
                    fh.write(json.dumps(data))
                    fh.flush()
                    self._cache_stamp, self._cache_seen = data["at"], now
                written = os.fstat(fh.fileno()).st_mtime
            self._states, self._asked = data.get("states"), written
        finally:
            lock.release()
        return self._states

    def is_gone(self, owner: dict[str, Any] | None, since: float | None = None) -> bool:
        """Whether ``owner``'s process has ended; ``since`` is when its owner file was written (the
        file system's clock, :meth:`~.owners.RunningTrials.written_at`)."""
        if not owner:
            return False
        if self._earlier_run_of_my_job(owner):
            return True
        if owner.get("host") == self.host:
            return process_is_gone(owner.get("pid"))
        job = owner.get("job_id")
        if not job or not self._speaks_for(str(job)):
            return False
        states = self._queue_states()
        if states is None:
            return False
        if not self.job_alive(job, states):
            return True
        # A job waiting to run again no longer runs the trial; but a queue answer older than the
        # trial may show the job waiting for its first start.
        return states.get(str(job)) in WAITING and since is not None and self._asked > since

    def _speaks_for(self, job: str) -> bool:
        """Whether the queue's answer can say that ``job`` ended (see ``study_jobs``)."""
        if self.study_jobs is None:
            return True
        # Read once per interval, as the queue is (a sweep judges every running trial).
        if self._ours is None or time.monotonic() - self._ours_read >= self.min_interval_s:
            # By the job's number: an array's tasks ("123_4" in Slurm, "123[4].server" in PBS)
            # are recorded as the array ("123", "123[].server").
            self._ours, self._ours_read = {_number(ours) for ours in self.study_jobs()}, time.monotonic()
        return _number(job) in self._ours

    def _earlier_run_of_my_job(self, owner: dict[str, Any]) -> bool:
        """A trial of this worker's own job, started before the job was requeued and restarted:
        the queue shows the job running again, and the old pid may be reused by then."""
        job = self.me.get("job_id")
        if not job or owner.get("job_id") != job:
            return False
        return bool(owner.get("restarts", 0) != self.me.get("restarts", 0))


def _number(job_id: str) -> str:
    """The leading number of a job id: ``123`` of ``123_4``, ``123[4].server`` and ``123``."""
    match = re.match(r"\d+", job_id)
    return match.group(0) if match else job_id

"""Real workers in threads on one study, with trial durations on a virtual clock.

Each worker is the product's :class:`~aimlutils.hyper_opt.worker.Worker` (budget, claim lock,
ask/tell, records, CSV), one per thread with its own storage, as the scale benchmark runs them.
A trial's "training" is a wait on a :class:`VirtualClock`: the clock jumps to the earliest
wake-up once every worker is waiting, and wakes that one worker alone. Trials therefore end in the
order their durations say (out of order across workers, as on a cluster) and every ask sees
exactly the trials that would be finished and running at that moment, while a study costs only
the CPU time of its asks, tells and objective code, however long its simulated trials are.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
from pathlib import Path
from typing import Any

import optuna
import yaml

from aimlutils.hyper_opt.base_objective import BaseObjective
from aimlutils.hyper_opt.config import RunConfig, load_config
from aimlutils.hyper_opt.coordination import Room, TrialBudget, TrialLife
from aimlutils.hyper_opt.coordination.study import create_or_load
from aimlutils.hyper_opt.storage import open_storage
from aimlutils.hyper_opt.worker import Worker


def scratch_dir() -> str | None:
    """Where a benchmark's studies live: tmpfs when there is one, else the default temporary folder.

    The journal file syncs each write to disk; on a disk that made a 32-worker study wait more
    than it computed. On tmpfs the same code runs, and only the (simulated) search is measured.
    """
    shm = "/dev/shm"  # noqa: S108 (a private temporary folder is made inside it)
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


class VirtualClock:
    """Simulated time shared by worker threads: :meth:`sleep` returns in order of wake-up time.

    Each of the ``parties`` threads is *busy* (running code) or *waiting* (in :meth:`sleep`, or
    :meth:`idle`). Only when none is busy does the clock move, to the earliest wake-up, and that
    sleeper alone resumes (it counts as busy from then on), so two trials never end at once.
    """

    def __init__(self, parties: int) -> None:
        self._cond = threading.Condition()
        self.now = 0.0
        # All take part from the start, so no sleeper is woken before the last one has begun.
        self._busy = parties
        self._wakeups: list[tuple[float, int]] = []
        self._tickets = itertools.count()
        self._released: set[int] = set()

    def leave(self) -> None:
        """The calling thread, one of ``parties``, is done: the clock no longer waits for it."""
        with self._cond:
            self._busy -= 1
            self._advance()

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of simulated time."""
        with self._cond:
            ticket = next(self._tickets)
            heapq.heappush(self._wakeups, (self.now + max(0.0, seconds), ticket))
            self._busy -= 1
            self._advance()
            self._cond.wait_for(lambda: ticket in self._released)
            self._released.discard(ticket)  # _advance counted this thread busy again

    def idle(self, real_s: float) -> None:
        """Wait up to ``real_s`` real seconds for the clock to move, not holding it back meanwhile."""
        with self._cond:
            now = self.now
            self._busy -= 1
            self._advance()
            self._cond.wait_for(lambda: self.now != now, timeout=real_s)
            self._busy += 1

    def _advance(self) -> None:
        if self._busy == 0 and self._wakeups:
            at, ticket = heapq.heappop(self._wakeups)
            self.now = max(self.now, at)
            self._released.add(ticket)
            self._busy += 1
            self._cond.notify_all()


def wait_on(clock: VirtualClock, life: TrialLife) -> None:
    """Make a worker's claims (its ``life``'s) wait on ``clock`` while running trials fill the
    budget, so that a waiting worker does not hold the clock back (and waits no real time)."""
    claim = life.claim

    def claim_on_the_clock(budget: TrialBudget) -> optuna.Trial | Room | None:
        claimed = claim(budget)
        if claimed is Room.WAIT:
            clock.idle(0.05)
        return claimed

    life.claim = claim_on_the_clock  # type: ignore[method-assign]


class ClockedObjective(BaseObjective):
    """An Objective whose trials take simulated time: ``self.clock.sleep(seconds)`` in ``train``."""

    clock: VirtualClock


def prepare_study(
    folder: Path, optuna_section: dict[str, Any], model: dict[str, Any], n_workers: int
) -> RunConfig:
    """Write ``hyper.yml``/``model.yml`` into ``folder``, check them, and create the study."""
    folder.mkdir(parents=True, exist_ok=True)
    section = {"name": "bench", "reload": 0, "save_path": str(folder), **optuna_section}
    (folder / "hyper.yml").write_text(yaml.safe_dump({"optuna": section}))
    (folder / "model.yml").write_text(yaml.safe_dump(model))
    cfg = load_config(folder / "hyper.yml", folder / "model.yml", objective_given=True)
    create_or_load(cfg, open_storage(cfg.storage), n_workers)
    return cfg


def run_workers(
    cfg: RunConfig, n_workers: int, objective_class: type[ClockedObjective]
) -> list[optuna.trial.FrozenTrial]:
    """Run ``n_workers`` workers on ``cfg``'s study to its end; its trials, in the order they ended.

    ``objective_class`` gets a fresh clock for this study (as a class attribute, since workers
    build their own instances).
    """
    clock = VirtualClock(n_workers)
    objective = type(objective_class.__name__, (objective_class,), {"clock": clock})
    errors: list[BaseException] = []

    def one(index: int) -> None:
        try:
            worker = Worker(cfg, index, n_workers, poll_s=0.0, objective_class=objective)
            wait_on(clock, worker.life)
            worker.run()
        except BaseException as err:  # reported after the join, with the study's end
            errors.append(err)
        finally:
            clock.leave()

    threads = [threading.Thread(target=one, args=(i,), name=f"worker-{i}") for i in range(n_workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{len(errors)} of {n_workers} workers failed") from errors[0]
    study = optuna.load_study(study_name=cfg.study_name, storage=open_storage(cfg.storage))
    finished = [t for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None]
    return sorted(finished, key=lambda t: t.datetime_complete or 0)

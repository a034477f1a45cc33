"""The virtual clock of the benchmarks (simulated trials end in order of their durations), and which
search-quality rows run one study."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import optuna

from benchmarks.common.virtual_clock import ClockedObjective, VirtualClock, prepare_study, run_workers


def test_sleepers_wake_in_order_of_wake_up_time_and_the_clock_jumps_there():
    clock, woke = VirtualClock(parties=4), []
    lock = threading.Lock()

    def sleeper(seconds: float) -> None:
        clock.sleep(seconds)
        with lock:
            woke.append((seconds, clock.now))
        clock.leave()

    threads = [threading.Thread(target=sleeper, args=(s,)) for s in (3.0, 1.0, 2.5, 0.5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert woke == [(0.5, 0.5), (1.0, 1.0), (2.5, 2.5), (3.0, 3.0)]


class LengthByNumber(ClockedObjective):
    """Trial n takes 10 - n time units: with several workers, later trials end first."""

    def train(self, trial: optuna.trial.BaseTrial, conf: dict[str, Any]) -> dict[str, float]:
        self.clock.sleep(10.0 - trial.number)
        return {"value": float(trial.params["x"])}


def test_workers_on_the_clock_finish_trials_out_of_order_and_all_of_them(tmp_path: Path):
    section = {
        "n_trials": 8,
        "metric": "value",
        "sampler": {"type": "RandomSampler", "seed": 0},
        "parameters": {"x": {"type": "float", "settings": {"name": "x", "low": 0.0, "high": 1.0}}},
    }
    cfg = prepare_study(tmp_path / "study", section, {}, n_workers=4)
    ended = run_workers(cfg, 4, LengthByNumber)
    numbers = [t.number for t in ended]
    assert sorted(numbers) == list(range(8))
    assert numbers[:4] == [3, 2, 1, 0]  # the first four start together; the shortest ends first


def test_rows_differing_only_in_constant_liar_are_one_study_at_one_worker_and_two_at_eight():
    from benchmarks.search_quality.run import SAMPLERS, effective

    with_liar, without = SAMPLERS["TPE + constant_liar"], SAMPLERS["TPE without constant_liar"]
    assert effective(with_liar(1, 0), 1) == effective(without(1, 0), 1)
    assert effective(with_liar(8, 0), 8) != effective(without(8, 0), 8)
    assert effective(with_liar(1, 0), 1) != effective(with_liar(1, 1000), 1)  # seeds stay apart

"""The worker: a process that runs trials of the shared study until its ``n_trials`` are done.

- :mod:`~.loop`: :class:`Worker`, one trial after another through the trial's lifecycle
  (:mod:`aimlutils.hyper_opt.coordination.lifecycle`);
- :mod:`~.setup`: what a worker is made of: identity, storage, liveness, the user's Objective;
- :mod:`~.main`: the process (signals, parent watch, exit codes): ``python -m aimlutils.hyper_opt.worker``.
"""

from aimlutils.hyper_opt.worker.loop import Worker, job_end, waiting_poll_s
from aimlutils.hyper_opt.worker.main import arm_stop_warning, left_code, main

__all__ = ["Worker", "arm_stop_warning", "job_end", "left_code", "main", "waiting_poll_s"]

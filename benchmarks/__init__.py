"""The benchmarks, one folder each; run one from the repository root with ``python -m benchmarks.NAME``.

- :mod:`~.scale`: hundreds to thousands of workers on one study, for each storage;
- :mod:`~.overhead`: what the worker path costs over plain Optuna, per trial and at start-up;
- :mod:`~.search_quality`: best value per trial against worker count, for several samplers;
- :mod:`~.pruning`: epochs saved and accuracy lost by each pruner;
- :mod:`~.scheduler_load`: scheduler calls of a study on a real SLURM cluster;
- :mod:`~.stop_signals`: a signal to ``optimize.py`` alone, and the workers left after it;
- :mod:`~.common`: what several of them share (their sections of ``docs/benchmarks.md``, workers
  on a virtual clock, the digits MLP).

Each writes its own section of ``docs/benchmarks.md`` (``--output``), which names the command that
made it. They use the package's public names only, so that a change inside the package that
keeps its API keeps them running (``tests/test_benchmarks.py`` runs a small version of most).
"""

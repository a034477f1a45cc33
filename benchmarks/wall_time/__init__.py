"""GPU time lost at jobs' time limits, with and without ``optuna.fit_wall_time``:
``python -m benchmarks.wall_time`` (see :mod:`~.run`)."""

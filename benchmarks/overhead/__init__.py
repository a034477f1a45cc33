"""What the worker path costs over plain Optuna: ``python -m benchmarks.overhead`` (see :mod:`~.run`)."""

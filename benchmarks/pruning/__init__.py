"""Epochs saved and accuracy lost by each pruner: ``python -m benchmarks.pruning`` (see :mod:`~.run`)."""

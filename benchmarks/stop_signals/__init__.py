"""A signal to optimize.py alone, and the workers left: ``python -m benchmarks.stop_signals``."""

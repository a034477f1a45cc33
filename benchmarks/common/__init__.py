"""What several benchmarks share.

- :mod:`~.doc`: each benchmark's own section of ``docs/benchmarks.md``;
- :mod:`~.virtual_clock`: real workers in threads, with trial durations on a simulated clock;
- :mod:`~.digits`: the digits MLP of ``examples/torch`` as an objective on that clock.
"""

"""Search quality against worker count: ``python -m benchmarks.search_quality``.

- :mod:`~.run`: the studies, per function, sampler, worker count and seed;
- :mod:`~.problems`: the test functions, each with its known optimum;
- :mod:`~.report`: the section of ``docs/benchmarks.md`` and its plots.
"""

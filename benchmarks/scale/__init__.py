"""Hundreds to thousands of workers on one study: ``python -m benchmarks.scale``.

- :mod:`~.run`: the cases, each run and measured (connections, load), and the section written;
- :mod:`~.worker_process`: one process of many workers in threads, timed and counted;
- :mod:`~.report`: the section of ``docs/benchmarks.md``: the table, notes and capacity model.
"""

"""Scheduler calls of a study on a SLURM cluster: ``python -m benchmarks.scheduler_load`` (:mod:`~.run`)."""

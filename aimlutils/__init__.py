"""Utilities for machine-learning research on HPC systems."""

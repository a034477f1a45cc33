"""Distributed multi-GPU hyperparameter optimization on HPC clusters, built on Optuna."""

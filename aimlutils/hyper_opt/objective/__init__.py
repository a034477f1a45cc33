"""The user's side of a trial: the ``Objective`` base class, objectives that run a command, loading
``objective.py``, the training helpers, and what each trial records to be run again.

- :mod:`~.base`: :class:`BaseObjective` (``from aimlutils.hyper_opt.base_objective import *``);
- :mod:`~.command`: :class:`CommandObjective`, a program per trial;
- :mod:`~.loader`: importing ``objective.py`` and building its ``Objective``;
- :mod:`~.training`: pruning callbacks and checkpoints (``aimlutils.hyper_opt.utils``);
- :mod:`~.reproduce`: each trial's environment and config, to run it again;
- :mod:`~.tracking`: MLflow runs per study and per trial.
"""

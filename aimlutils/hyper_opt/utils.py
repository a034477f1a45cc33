"""The import path users write for the training helpers: ``from aimlutils.hyper_opt.utils import ...``.

They live in :mod:`aimlutils.hyper_opt.objective.training`; this path is the one the original
``hyper_opt`` package had, so it stays.
"""

from aimlutils.hyper_opt.objective.training import *  # noqa: F403
from aimlutils.hyper_opt.objective.training import __all__  # noqa: F401

"""The import path of the user's ``objective.py``: ``from aimlutils.hyper_opt.base_objective import *``.

The class lives in :mod:`aimlutils.hyper_opt.objective.base`; this path is the one users write
(and the original ``hyper_opt`` package had), so it stays.
"""

from aimlutils.hyper_opt.objective.base import *  # noqa: F403
from aimlutils.hyper_opt.objective.base import __all__  # noqa: F401

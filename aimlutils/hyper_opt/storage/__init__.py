"""Where a study lives, as one wing: each storage kind one class that knows its URL schemes.

(Filled in below as the wing takes shape.)
"""

from aimlutils.hyper_opt.storage.opening import *  # noqa: F403

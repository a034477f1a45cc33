"""``python -m benchmarks.scheduler_load``: see :mod:`benchmarks.scheduler_load.run`."""

import sys

from benchmarks.scheduler_load.run import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m benchmarks.wall_time``: see :mod:`benchmarks.wall_time.run`."""

import sys

from benchmarks.wall_time.run import main

if __name__ == "__main__":
    sys.exit(main())

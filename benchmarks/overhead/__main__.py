"""``python -m benchmarks.overhead``: see :mod:`benchmarks.overhead.run`."""

import sys

from benchmarks.overhead.run import main

if __name__ == "__main__":
    sys.exit(main())

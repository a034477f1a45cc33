"""``python -m benchmarks.pruning``: see :mod:`benchmarks.pruning.run`."""

import sys

from benchmarks.pruning.run import main

if __name__ == "__main__":
    sys.exit(main())

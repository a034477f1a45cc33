"""``python -m benchmarks.search_quality``: see :mod:`benchmarks.search_quality.run`."""

import sys

from benchmarks.search_quality.run import main

if __name__ == "__main__":
    sys.exit(main())

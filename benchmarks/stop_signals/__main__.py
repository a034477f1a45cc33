"""``python -m benchmarks.stop_signals``: see :mod:`benchmarks.stop_signals.run`."""

import sys

from benchmarks.stop_signals.run import main

if __name__ == "__main__":
    sys.exit(main())

"""Run a hyperparameter search: ``python optimize.py hyper.yml model.yml``."""

import sys

from aimlutils.hyper_opt.cli import main

if __name__ == "__main__":
    sys.exit(main())

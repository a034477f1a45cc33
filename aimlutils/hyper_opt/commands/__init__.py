"""The commands of ``optimize.py``: run (the default), status and cancel."""

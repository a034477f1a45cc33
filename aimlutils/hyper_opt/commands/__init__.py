"""The commands of ``optimize.py``: run (the default), status, cancel, report and dashboard."""

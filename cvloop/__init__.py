"""cvloop: the retraining runbook of a production YOLO detector, as Prefect flows.

Importing this package has no side effects: no directories are made, no tracking URI is
set and no client is built. Entry points (the CLI, flows) call
:func:`cvloop.config.offline.apply_offline` before they import the heavy libraries.
"""

__version__ = "0.1.0"

"""Fault injection at the boundaries of a multi-step promotion (for the crash tests).

``CVLOOP_CRASH_AT=<step>`` (comma-separated for several) makes the process **kill itself**
(SIGKILL: no ``finally``, no ``atexit``, exactly what an OOM kill or a lost node does) when it
reaches :func:`crash_point` with that name. A test runs the real command with it set, then
runs it again without and checks that the end state is the one an uninterrupted run leaves.
Unset (always, in production), each crash point is one environment lookup.

Steps: ``rollback:manifest-written``, ``rollback:champion-moved`` (``cvloop/stages/rollout.py``);
``<kind>:added``, ``<kind>:committed``, ``<kind>:pushed``, ``<kind>:tagged`` for a data
version of ``<kind>`` ``dataset`` / ``holdout`` (``cvloop/adapters/versioning.py``), and
``dataset:planned`` (the retrain's split plan journaled: ``cvloop/stages/dataset.py``).
"""

from __future__ import annotations

import os
import signal
import sys

CRASH_ENV = "CVLOOP_CRASH_AT"


def crash_point(step: str) -> None:
    wanted = os.environ.get(CRASH_ENV, "")
    if wanted and step in {s.strip() for s in wanted.split(",")}:
        print(f"{CRASH_ENV}: killed at {step}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

"""``cvloop bench NAME``: benchmarks that print one JSON object per case.

Every case measures cvloop and a baseline *in the same run* and prints::

    {"name": ..., "value": ..., "unit": ..., "baseline": "<what the baseline is>",
     "baseline_value": ..., "ratio": value / baseline_value}

Performance is measured here, never by timed assertions in tests.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass


@dataclass
class Case:
    name: str
    value: float
    unit: str
    baseline: str
    baseline_value: float
    ratio: float = 0.0

    def __post_init__(self) -> None:
        self.ratio = round(self.value / self.baseline_value, 6) if self.baseline_value else 0.0


def timed(fn: Callable, repeat: int = 1) -> tuple[float, object]:
    """Best wall time of ``repeat`` calls (seconds) and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


BENCHES: dict[str, str] = {
    "drift": "cvloop.app.bench.drift:run",
    "prefilter": "cvloop.app.bench.prefilter:run",
    "video": "cvloop.app.bench.video:run",
    "labelstudio": "cvloop.app.bench.labelstudio:run",
    "dvc": "cvloop.app.bench.dvc:run",
    "serve": "cvloop.app.bench.serve:run",
}


def run(name: str, quick: bool = False, out=None) -> list[Case]:
    """Run benchmark ``name``; print each case as one JSON line as it completes."""
    import importlib

    if name not in BENCHES:
        from cvloop.core.errors import CvloopError

        raise CvloopError(f"unknown benchmark {name!r}", fix=f"choose from {', '.join(BENCHES)}")
    module, func = BENCHES[name].split(":")
    cases = []
    gen: Iterator[Case] = getattr(importlib.import_module(module), func)(quick=quick)
    for case in gen:
        cases.append(case)
        print(json.dumps(asdict(case)), file=out or sys.stdout, flush=True)
    return cases

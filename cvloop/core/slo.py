"""Service level objectives of the serving path, and their error budgets.

Two objectives (params.yaml ``slo``): a share ``latency_target`` of the frames served within
``latency_ms`` (the server's own time), and at most ``error_rate`` of the frames failing.
The error budget of an objective is what it allows to go wrong (``1 - latency_target`` of
the frames slow, ``error_rate`` of them failing); *budget used* is what went wrong over
what was allowed: 100 % spends the whole budget, above that the objective is missed.

The canary checks the challenger against both objectives beside the champion comparison
(:func:`slo_check`): a miss is a breach only when the champion met them on its own frames
(both missing is the serving hosts', not the model's); the weekly review reports each
version's attainment and budget used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SloReport:
    frames: int
    errors: int
    latency_ms: float
    latency_target: float
    error_objective: float
    within: float | None  # share of successful frames served within latency_ms
    error_rate: float

    @property
    def latency_budget_used(self) -> float | None:
        if self.within is None:
            return None
        return (1.0 - self.within) / (1.0 - self.latency_target)  # target < 1 (params)

    @property
    def error_budget_used(self) -> float:
        return self.error_rate / self.error_objective if self.error_objective > 0 else (
            0.0 if self.errors == 0 else 1e9)  # fmt: skip

    @property
    def met(self) -> bool:
        lat = self.latency_budget_used
        return (lat is None or lat <= 1.0) and self.error_budget_used <= 1.0

    def describe(self) -> str:
        lat = ("no frame served" if self.within is None else
               f"{self.within:.1%} within {self.latency_ms:g} ms (objective "
               f"{self.latency_target:.0%}; budget used {self.latency_budget_used:.0%})")  # fmt: skip
        return (f"{lat}; errors {self.error_rate:.2%} (objective <= {self.error_objective:.2%}; "
                f"budget used {self.error_budget_used:.0%})")  # fmt: skip


def slo_report(latency_ms: np.ndarray, frames: int, errors: int, slo) -> SloReport:
    """``latency_ms`` of the successful frames; ``slo``: params.yaml's ``slo`` section."""
    lat = np.asarray(latency_ms, dtype=float)
    within = float(np.mean(lat <= slo.latency_ms)) if len(lat) else None
    rate = errors / frames if frames else 0.0
    return SloReport(frames, errors, slo.latency_ms, slo.latency_target, slo.error_rate,
                     within, rate)  # fmt: skip


def slo_check(challenger: SloReport, champion: SloReport):
    """The canary's SLO guard: (passed, detail)."""
    detail = f"{challenger.describe()}; champion: {champion.describe()}"
    if challenger.met:
        return True, detail
    if not champion.met:
        return True, detail + ": both miss the objectives: the serving hosts, not the model"
    return False, detail + ": the challenger misses what the champion meets"

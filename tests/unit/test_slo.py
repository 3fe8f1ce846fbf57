"""Service level objectives: attainment, error budget, the canary's SLO guard, the weekly
review's red line."""

from __future__ import annotations

import numpy as np

from cvloop.config.params import CanaryParams, SloParams
from cvloop.core.pairing import Quality, QualityCheck
from cvloop.core.rollout import Sample, canary
from cvloop.core.slo import slo_check, slo_report
from cvloop.stages.weekly import review_markdown

SLO = SloParams(latency_ms=50, latency_target=0.95, error_rate=0.01)
KEPT = Quality("ok", "pairing", [QualityCheck("kept:all classes", "ok", "97 % kept")])


def test_attainment_and_budget_used():
    lat = np.r_[np.full(97, 20.0), np.full(3, 80.0)]  # 3 % slow: 60 % of a 5 % budget
    r = slo_report(lat, frames=102, errors=2, slo=SLO)
    assert r.within == 0.97 and abs(r.latency_budget_used - 0.6) < 1e-9
    assert abs(r.error_rate - 2 / 102) < 1e-12 and r.error_budget_used > 1  # 1.96 % > 1 %
    assert not r.met and "budget used 60%" in r.describe()
    assert slo_report(np.array([]), 0, 0, SLO).within is None


def test_the_guard_blames_the_model_only_when_the_champion_meets_the_objectives():
    fast, slow = np.full(200, 20.0), np.r_[np.full(180, 20.0), np.full(20, 90.0)]
    ok, miss = slo_report(fast, 200, 0, SLO), slo_report(slow, 200, 0, SLO)
    assert slo_check(ok, ok)[0]
    passed, why = slo_check(miss, ok)
    assert not passed and "the challenger misses what the champion meets" in why
    passed, why = slo_check(miss, miss)
    assert passed and "the serving hosts, not the model" in why


def _sample(lat: np.ndarray) -> Sample:
    n = len(lat)
    return Sample(n, 0, lat, np.full(n * 2, 0.7), np.full(n, 2.0))


def test_the_canary_checks_the_slo_beside_the_comparison():
    c = CanaryParams(min_frames=100, p95_latency_ratio_max=100)  # the ratio guard is not it
    base = np.full(300, 20.0)
    slow = np.r_[np.full(270, 20.0), np.full(30, 120.0)]  # 10 % over 50 ms
    res = canary(_sample(slow), _sample(base), c, KEPT, slo=SLO)
    assert res.status == "breach" and any(r.startswith("slo:") for r in res.reasons)
    res = canary(_sample(base), _sample(base), c, KEPT, slo=SLO)
    assert res.status == "ok" and "slo" in [x.name for x in res.checks]
    assert "slo" not in [x.name for x in canary(_sample(base), _sample(base), c, KEPT).checks]


def test_a_missed_objective_is_red_in_the_weekly_review():
    data = {"monitor": [], "versions": [], "changes": [], "data": [], "slo": [
        {"version": "3", "frames": 10, "within": 0.5, "latency_budget_used": 10.0,
         "error_rate": 0.0, "error_budget_used": 0.0, "met": False, "describe": "50.0% within"},
        {"version": "all", "frames": 10, "within": 0.5, "latency_budget_used": 10.0,
         "error_rate": 0.0, "error_budget_used": 0.0, "met": False, "describe": "50.0% within"},
    ]}  # fmt: skip
    md, red = review_markdown("2026-W49", data, [])
    assert any("service level objectives missed" in r for r in red)
    assert "| v3 | 10 | 50.0% | 1000.0% |" in md and "🔴 no" in md

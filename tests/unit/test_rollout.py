"""Canary checks and rollout decisions: pure functions on samples of the inference log."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from cvloop.config.params import CanaryParams
from cvloop.core.pairing import Quality, QualityCheck
from cvloop.core.rollout import PairedLatency, PairedVolume, Sample, decide
from cvloop.core.rollout import canary as _canary

C = CanaryParams(min_frames=100)
KEPT = Quality("ok", "pairing", [QualityCheck("kept:all classes", "ok", "97 % kept")])


def canary(challenger, champion, c, quality=KEPT):
    """The canary with quality evidence that says no loss (these tests are about guards)."""
    return _canary(challenger, champion, c, quality)


SHARES, HOURS = [10.0, 50.0, 100.0], [8.0, 8.0, 8.0]
NOW = dt.datetime(2026, 11, 22, 12, tzinfo=dt.UTC)


def _sample(n=400, errors=0, latency=10.0, conf_mean=0.7, volume=3.0, seed=0) -> Sample:
    rng = np.random.default_rng(seed)
    ok = n - errors
    return Sample(
        n,
        errors,
        rng.normal(latency, latency * 0.05, ok),
        np.clip(rng.normal(conf_mean, 0.1, int(ok * volume)), 0, 1),
        rng.poisson(volume, ok).astype(float),
    )


def test_a_like_for_like_challenger_passes_every_check():
    res = canary(_sample(seed=1), _sample(seed=2), C)
    assert res.status == "ok" and res.reasons == []
    assert [c.name for c in res.checks] == [
        "error_rate",
        "p95_latency",
        "volume",
        "kept:all classes",
        "confidence",
    ]
    assert res.evidence == "pairing"


@pytest.mark.parametrize(
    ("challenger", "failing"),
    [
        (_sample(latency=14.0, seed=1), "p95_latency"),  # 1.4x slower
        (_sample(errors=20, seed=1), "error_rate"),  # 5 %
        (_sample(volume=1.5, seed=1), "volume"),  # half the detections
    ],
)
def test_each_breach_is_named(challenger, failing):
    res = canary(challenger, _sample(seed=2), C)
    assert res.status == "breach" and res.evidence == "guards"
    assert [r.split(":")[0] for r in res.reasons] == [failing]


def _timed(ms: float, seed: int, n: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).normal(ms, ms * 0.05, n)


def test_at_100_percent_the_latency_guard_uses_both_models_timed_on_the_same_frames():
    # the challenger served today under twice the load the champion met on its canary days:
    # the served latencies (x2) say nothing about the models; timed side by side they match
    busy_today = _sample(latency=20.0, seed=1)
    same_cost = PairedLatency(_timed(5.0, 1), _timed(5.0, 2))
    res = _canary(busy_today, _sample(seed=2), C, KEPT, same_cost)
    lat = {c.name: c for c in res.checks}["p95_latency"]
    assert res.status == "ok" and lat.passed, lat.detail
    assert "same 64 served frames" in lat.detail and "served p95 21." in lat.detail
    # load spikes on a few of the challenger's turns (3 of 64 frames x10) do not decide
    spiky = _timed(5.0, 1)
    spiky[[3, 17, 40]] *= 10
    res = _canary(_sample(seed=1), _sample(seed=2), C, KEPT, PairedLatency(spiky, _timed(5.0, 2)))
    assert res.status == "ok", res.reasons
    # and a challenger that costs 1.5x per frame breaches, whatever the served numbers say
    slower = PairedLatency(_timed(7.5, 1), _timed(5.0, 2))
    res = _canary(_sample(seed=1), _sample(seed=2), C, KEPT, slower)
    assert res.status == "breach" and [r.split(":")[0] for r in res.reasons] == ["p95_latency"]
    assert "x1.5" in res.reasons[0]
    # no frame could be timed: the served latencies judge, as at 10 % and 50 %
    none = PairedLatency(np.array([]), np.array([]))
    assert _canary(busy_today, _sample(seed=2), C, KEPT, none).status == "breach"


def test_below_100_percent_a_served_latency_breach_is_re_timed_before_it_rolls_back():
    # the challenger's frames met a burst of load (another job on the host): served x1.5,
    # but the same frames through both models, taking turns, cost the same
    burst = _sample(latency=15.0, seed=1)
    load = PairedLatency(_timed(5.0, 1), _timed(5.0, 2), replaces_served=False)
    res = _canary(burst, _sample(seed=2), C, KEPT, load)
    lat = {c.name: c for c in res.checks}["p95_latency"]
    assert res.status == "ok" and lat.passed, lat.detail
    assert lat.detail.startswith("served 16.") and "(x1.48;" in lat.detail
    assert "not the model" in lat.detail and "same 64 served frames" in lat.detail
    # the re-timing confirms a slower model: the breach stands, with both measures named
    slower = PairedLatency(_timed(8.0, 1), _timed(5.0, 2), replaces_served=False)
    res = _canary(burst, _sample(seed=2), C, KEPT, slower)
    assert res.status == "breach" and [r.split(":")[0] for r in res.reasons] == ["p95_latency"]
    assert "the model is slower" in res.reasons[0] and "x1.6" in res.reasons[0]  # per frame
    # an untripped screen is not overruled by the re-timing (it is run only on a breach)
    assert _canary(_sample(seed=1), _sample(seed=2), C, KEPT, slower).status == "ok"


def test_a_confidence_shift_alone_is_a_signal_never_a_breach():
    # a retrained model moves its confidences a lot (the demo's better candidate did: KS D
    # 0.35); with the paired evidence saying it keeps the champion's boxes, that is no breach
    res = canary(_sample(conf_mean=0.3, seed=1), _sample(seed=2), C)
    conf = next(c for c in res.checks if c.name == "confidence")
    assert res.status == "ok" and conf.kind == "signal" and "shifted" in conf.detail


def test_the_quality_evidence_decides_a_breach_and_an_inconclusive_one_holds():
    lost = Quality("breach", "pairing", [QualityCheck("kept:crate", "breach", "3/60 kept")])
    res = _canary(_sample(seed=1), _sample(seed=2), C, lost)
    assert res.status == "breach" and res.evidence == "pairing"
    assert res.reasons == ["kept:crate: 3/60 kept"]  # the guards all passed
    assert _decide(0, 1.0, res).action == "rollback"
    unsure = Quality("inconclusive", "none", [QualityCheck("kept:all classes", "inconclusive",
                                                           "12/14 kept: 30 needed")])  # fmt: skip
    res = _canary(_sample(seed=1), _sample(seed=2), C, unsure)
    assert res.status == "insufficient" and res.evidence == "none"
    assert _decide(0, 24.0, res).action == "hold"  # never promotes without evidence
    # a guard breach still rolls back when the quality evidence is not in yet
    res = _canary(_sample(errors=40, seed=1), _sample(seed=2), C, unsure)
    assert res.status == "breach" and res.evidence == "guards"
    assert [r.split(":")[0] for r in res.reasons] == ["error_rate"]


def test_no_quality_evidence_fails_closed():
    res = _canary(_sample(seed=1), _sample(seed=2), C, None)
    assert res.status == "insufficient"
    assert "fails closed" in res.reasons[0]


def test_a_small_sample_holds_and_never_judges():
    res = canary(_sample(n=50, errors=50), _sample(), C)  # every frame failed, but only 50
    assert res.status == "insufficient"
    assert "50 / champion 400 frames; 100 each needed" in res.reasons[0]
    d = decide(0, SHARES, HOURS, 24.0, res, approval_before_share=100, approved=True,
               rejected=False, approval_asked_at=None, deadline_hours=24, now=NOW)  # fmt: skip
    assert d.action == "hold"


def test_no_detection_by_either_model_is_no_change_but_one_side_alone_is():
    empty = Sample(300, 0, np.full(300, 10.0), np.zeros(0), np.zeros(300))
    assert canary(empty, empty, C).status == "ok"
    res = canary(empty, _sample(), C)  # the challenger went blind
    assert res.status == "breach"
    assert {r.split(":")[0] for r in res.reasons} == {"volume"}


def test_when_every_frame_is_on_a_drift_camera_the_paired_evidence_decides_the_volume():
    """Volume leaves out the drift cameras. On a small fleet where the monitor flagged every
    camera (the e2e demo's three cameras, one run in several) nothing was left to compare,
    and a challenger that passed every other check was rolled back for "no frame served
    without error". Now the volume is not judged there and the paired re-scoring decides;
    with no paired evidence the stage holds; a challenger with no good frame still fails."""
    drift_only = Sample(300, 0, np.full(300, 10.0), np.zeros(0), np.zeros(0), drift_frames=300)
    res = canary(drift_only, drift_only, C)
    volume = next(c for c in res.checks if c.name == "volume")
    assert (
        volume.passed
        and "not judged" in volume.detail
        and "challenger and the champion" in (volume.detail)
    )
    assert res.status == "ok"
    # camera routing: the challenger's cameras all drifted, the champion's did not
    res = canary(drift_only, _sample(), C)
    assert res.status == "ok" and "the challenger served" in next(
        c.detail for c in res.checks if c.name == "volume"
    )
    # never promoted on nothing: without paired evidence the stage holds
    assert _canary(drift_only, drift_only, C, None).status == "insufficient"
    # a challenger whose every frame failed is still a volume breach (and an error one)
    failed = Sample(300, 300, np.zeros(0), np.zeros(0), np.zeros(0))
    res = canary(failed, _sample(), C)
    assert res.status == "breach"
    assert {r.split(":")[0] for r in res.reasons} >= {"volume", "error_rate"}


def test_when_the_models_served_different_days_the_volume_is_judged_on_the_same_frames():
    """At 100 % the champion's served volume is from its canary days, other scenes: a
    challenger at x0.77 of a busier day was rolled back while it kept 99.9 % of the
    champion's boxes (the rollout test, on a later calendar day). Given both models'
    detections on the same frames, those decide, either way."""
    quiet, busy = _sample(volume=3.1, seed=1), _sample(volume=4.1, seed=2)
    assert canary(quiet, busy, C).status == "breach"  # served days compared
    same = PairedVolume(np.full(64, 3.9), np.full(64, 4.0))
    res = _canary(quiet, busy, C, KEPT, None, None, same)
    volume = next(c for c in res.checks if c.name == "volume")
    assert res.status == "ok" and volume.passed
    assert "x0.97" in volume.detail and "same 64 frames" in volume.detail
    blind = PairedVolume(np.full(64, 0.5), np.full(64, 4.0))  # it stopped detecting
    res = _canary(busy, busy, C, KEPT, None, None, blind)
    assert res.status == "breach" and res.reasons[0].startswith("volume: 0.50 vs champion 4.00")


def test_a_small_shift_of_a_retrained_model_is_not_a_breach():
    # a retrained model is a little more confident: KS p is tiny on many detections, but D small
    res = canary(_sample(conf_mean=0.74, seed=1), _sample(seed=2), C)
    conf = next(c for c in res.checks if c.name == "confidence")
    assert conf.passed and "p " in conf.detail and "no marked shift" in conf.detail


def _decide(idx, served, res, **kw):
    args = dict(approval_before_share=100, approved=False, rejected=False,
                approval_asked_at=None, deadline_hours=24, now=NOW)  # fmt: skip
    return decide(idx, SHARES, HOURS, served, res, **{**args, **kw})


def test_stages_advance_after_their_hours_and_100_needs_approval():
    ok = canary(_sample(seed=1), _sample(seed=2), C)
    assert _decide(0, 3.0, ok).action == "hold"  # 3 of 8 h served
    d = _decide(0, 8.0, ok)
    assert (d.action, d.next_share) == ("advance", 50.0)
    assert _decide(1, 9.0, ok).action == "await_approval"
    d = _decide(1, 9.0, ok, approved=True)
    assert (d.action, d.next_share) == ("advance", 100.0)
    assert _decide(2, 8.0, ok, approved=True).action == "promote"


def test_no_approval_by_the_deadline_stops_and_never_promotes():
    ok = canary(_sample(seed=1), _sample(seed=2), C)
    asked = NOW - dt.timedelta(hours=25)
    d = _decide(1, 30.0, ok, approval_asked_at=asked)
    assert d.action == "stop" and "no auto-promotion" in d.reason
    assert _decide(1, 30.0, ok, approval_asked_at=NOW - dt.timedelta(hours=2)).action == (
        "await_approval"
    )


def test_breach_or_rejection_rolls_back_at_any_stage():
    bad = canary(_sample(errors=40, seed=1), _sample(seed=2), C)
    d = _decide(0, 1.0, bad)
    assert d.action == "rollback" and d.reason.startswith("canary breach at 10%: error_rate")
    ok = canary(_sample(seed=1), _sample(seed=2), C)
    assert _decide(1, 1.0, ok, rejected=True).action == "rollback"


def test_a_breach_in_one_camera_group_is_a_breach_even_when_the_fleet_average_passes():
    from cvloop.core.rollout import with_groups

    # the challenger is 1.6x slower in the small north group only: fleet-wide p95 holds
    north = canary(_sample(n=150, latency=16.0, seed=3), _sample(n=150, seed=4), C)
    default = canary(_sample(n=900, seed=5), _sample(n=900, seed=6), C)
    fleet = canary(_sample(n=1050, seed=7), _sample(n=1050, seed=8), C)
    assert fleet.status == "ok" and north.status == "breach"
    res = with_groups(fleet, {"default": default, "north": north})
    assert res.status == "breach"
    assert [r.split(":")[0] + ":" + r.split(":")[1] for r in res.reasons] == [
        "group north: p95_latency"
    ]
    # a group too small to judge alone does not hold the stage; one group is the fleet
    tiny = canary(_sample(n=20, seed=3), _sample(n=20, seed=4), C)
    ok = with_groups(fleet, {"default": default, "north": tiny})
    (small,) = [c for c in ok.checks if c.name == "group north"]
    assert ok.status == "ok" and small.passed and "judged in the fleet-wide" in small.detail
    assert with_groups(fleet, {"default": default}) is fleet

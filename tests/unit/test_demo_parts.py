"""Pieces of the demo: the simulated reviewer's imperfection, demo params, and the
orchestration-share arithmetic."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from cvloop.app.demo import FAST, FULL, _merge
from cvloop.app.orchestration import OrchestrationShare, RunCost, union_seconds
from cvloop.config.params import load_params, parse_params
from cvloop.core.frames import LabelBox
from cvloop.sim.fleet.reviewer import imperfect

BIG = LabelBox("crate", 0.5, 0.5, 0.3, 0.3)
SMALL = LabelBox("cone", 0.2, 0.2, 0.05, 0.05)  # 0.25 % of the frame


def test_a_perfect_reviewer_submits_the_truth_unchanged():
    rng = np.random.default_rng(0)
    out, jittered, missed = imperfect([BIG, SMALL], rng, 0.0, 0.0, 320, 320)
    assert out == [BIG, SMALL] and jittered == 0 and missed == 0


def test_jitter_moves_edges_by_pixels_and_keeps_the_class_and_the_frame():
    rng = np.random.default_rng(1)
    moved = []
    for _ in range(200):
        (b,), jittered, _ = imperfect([BIG], rng, 1.0, 0.0, 320, 320)
        assert jittered == 1 and b.label == "crate"
        assert b.cx - b.w / 2 >= 0 and b.cx + b.w / 2 <= 1
        moved.append(abs(b.cx - BIG.cx) * 320)
    # a 1 px edge sigma moves the centre by ~0.7 px: never zero, never tens of pixels
    assert 0.2 < float(np.mean(moved)) < 1.5 and max(moved) < 6


def test_only_small_boxes_are_overlooked_at_about_the_miss_rate():
    rng = np.random.default_rng(2)
    kept_big = kept_small = 0
    for _ in range(2000):
        out, _, _ = imperfect([BIG, SMALL], rng, 0.0, 0.1, 320, 320)
        kept_big += BIG in out
        kept_small += SMALL in out
    assert kept_big == 2000
    assert 1700 < kept_small < 1900  # ~10 % missed


def test_demo_params_are_valid_params_and_deep_merged():
    base = load_params().model_dump(by_alias=True, mode="json")
    for size in (FULL, FAST):
        merged = _merge(base, size.params)
        p = parse_params(merged, source="test")
        assert p.rollout.canary.min_frames == size.params["rollout"]["canary"]["min_frames"]
        # a nested override keeps its siblings
        assert (
            p.rollout.canary.p95_latency_ratio_max
            == base["rollout"]["canary"]["p95_latency_ratio_max"]
        )
    assert FULL.train_epochs == 15 and load_params().train.epochs == 50


T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def _iv(a: float, b: float) -> tuple[dt.datetime, dt.datetime]:
    return T0 + dt.timedelta(seconds=a), T0 + dt.timedelta(seconds=b)


@pytest.mark.parametrize(
    ("intervals", "expected"),
    [
        ([], 0.0),
        ([_iv(0, 10)], 10.0),
        ([_iv(0, 10), _iv(20, 25)], 15.0),
        ([_iv(0, 10), _iv(5, 12)], 12.0),  # overlap counted once
        ([_iv(5, 12), _iv(0, 10), _iv(1, 2)], 12.0),  # unsorted, nested
    ],
)
def test_union_of_task_intervals(intervals, expected):
    assert union_seconds(intervals) == pytest.approx(expected)


def test_orchestration_share_counts_time_outside_tasks_and_pickup():
    cost = OrchestrationShare(
        wall_s=1000.0,
        runs=[
            RunCost("a", "retrain", running_s=500.0, work_s=480.0, pickup_s=5.0),
            RunCost("b", "tick", running_s=3.0, work_s=4.0, pickup_s=2.0),  # clock skew: 0
            RunCost("c", "tick", running_s=1.0, work_s=0.5, pickup_s=60.0, scheduled=True),
        ],
    )
    assert cost.overhead_s == pytest.approx(87.5)
    assert cost.share == pytest.approx(0.0875)
    # a scheduled background run that started late delayed nothing: shown apart
    assert cost.path_overhead_s == pytest.approx(27.0) and cost.path_share == pytest.approx(0.027)
    text = cost.summary()
    assert (
        "8.8 %" in text and "on the path (the 2 runs started and waited for) 27.0 s = 2.7 %" in text
    )
    assert "the other 1 started by their schedules (60.5 s" in text
    assert "[tick 2 (62.5 s), retrain 1 (25.0 s)]" in text  # where it went, per flow

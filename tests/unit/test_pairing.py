"""The canary's quality evidence: paired re-scoring and labeled frames (pure functions)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from cvloop.config.params import CanaryQualityParams
from cvloop.core.frames import LabelBox
from cvloop.core.pairing import (
    PairedFrame,
    decide_quality,
    judge_labels,
    judge_pairing,
    mean_ap,
    pair_classes,
    wilson,
)

Q = CanaryQualityParams(min_boxes=30, max_loss=0.15, labels_min_frames=10)
MATCH = {"confident_floor": 0.5, "match_conf": 0.25, "match_iou": 0.5}
CLASSES = ["barrel", "cone", "crate"]


def _scene(rng, n=3):
    """n objects in a frame, each (class, box), spread so they never overlap."""
    out = []
    for i in range(n):
        cx = (i + 0.5) / n
        out.append(LabelBox(CLASSES[int(rng.integers(3))], cx, 0.5, 0.8 / n, 0.3))
    return out


def _model(truth, rng, *, conf=0.8, miss=0.0, swap=None, jitter=0.01):
    """What a detector says about a frame: the truth, jittered, some boxes missed, classes
    renamed by ``swap``."""
    out = []
    for b in truth:
        if rng.random() < miss:
            continue
        label = (swap or {}).get(b.label, b.label)
        d = rng.normal(0, jitter, 2)
        out.append((LabelBox(label, b.cx + d[0], b.cy + d[1], b.w, b.h), conf))
    return out


def _frames(n, *, challenger, seed=0, champion=None):
    rng = np.random.default_rng(seed)
    frames, truths = [], []
    for i in range(n):
        truth = _scene(rng)
        truths.append(truth)
        frames.append(
            PairedFrame(f"frames/cam-0{i % 2}/k{i}.jpg", f"cam-0{i % 2}", "default", "champion",
                        _model(truth, rng, **(champion or {})), _model(truth, rng, **challenger))
        )  # fmt: skip
    return frames, truths


def test_an_identical_challenger_keeps_every_box():
    frames, _ = _frames(40, challenger={})
    classes = pair_classes(frames, **MATCH)
    assert all(c.kept_share == 1.0 and c.found_share == 1.0 for c in classes.values())
    q = judge_pairing(classes, len(frames), Q)
    assert q.status == "ok" and q.evidence == "pairing"
    assert q.checks[0].name == "kept:all classes"


def test_a_label_map_mix_up_loses_the_swapped_classes_only():
    # a retrain whose class order was mixed up: crate and barrel swapped, cone right
    frames, _ = _frames(80, challenger={"swap": {"crate": "barrel", "barrel": "crate"}})
    classes = pair_classes(frames, **MATCH)
    assert classes["cone"].kept_share == 1.0
    assert classes["crate"].kept_share == 0.0 and classes["barrel"].kept_share == 0.0
    q = judge_pairing(classes, len(frames), Q)
    assert q.status == "breach"
    bad = {c.name for c in q.checks if c.status == "breach"}
    assert bad == {"kept:all classes", "kept:barrel", "kept:crate"}


def test_a_better_challenger_keeps_the_boxes_and_finds_more():
    # the champion misses 40 % of the objects (night), the challenger misses none
    frames, _ = _frames(60, challenger={}, champion={"miss": 0.4})
    classes = pair_classes(frames, **MATCH)
    assert all(c.kept_share == 1.0 for c in classes.values())
    assert all(c.found_share < 0.8 for c in classes.values())  # its new finds, reported
    assert judge_pairing(classes, len(frames), Q).status == "ok"


def test_a_small_loss_within_the_tolerance_passes_and_noise_does_not_breach():
    frames, _ = _frames(100, challenger={"miss": 0.05}, seed=3)
    q = judge_pairing(pair_classes(frames, **MATCH), len(frames), Q)
    assert q.status == "ok"
    # 30 % lost is beyond the tolerance (at least 85 % kept), and the interval says so
    frames, _ = _frames(100, challenger={"miss": 0.3}, seed=3)
    q = judge_pairing(pair_classes(frames, **MATCH), len(frames), Q)
    assert q.status == "breach"


def test_too_few_boxes_is_inconclusive_and_a_rare_class_is_judged_in_the_pool():
    frames, _ = _frames(5, challenger={})  # 15 confident boxes < 30
    q = judge_pairing(pair_classes(frames, **MATCH), len(frames), Q)
    assert q.status == "inconclusive" and q.evidence == "none"
    assert "30 needed" in q.checks[0].detail
    rng = np.random.default_rng(1)
    rare = [
        PairedFrame(f"k{i}", "cam", "default", "champion",
                    [(LabelBox("crate", 0.3, 0.5, 0.2, 0.2), 0.9)] * (i < 40)
                    + [(LabelBox("pallet", 0.7, 0.5, 0.2, 0.2), 0.9)] * (i < 5),
                    [(LabelBox("crate", 0.3 + rng.normal(0, 0.005), 0.5, 0.2, 0.2), 0.8)])
        for i in range(40)
    ]  # fmt: skip
    q = judge_pairing(pair_classes(rare, **MATCH), 40, Q)
    names = [c.name for c in q.checks]
    assert names == ["kept:all classes", "kept:crate"]  # pallet (5 boxes) only in the pool
    assert "pallet" in q.note
    assert q.classes["pallet"]["kept_share"] == 0.0
    assert q.status == "ok"  # 40 of 45 kept: 88.9 % >= 85 %


def test_a_borderline_share_holds_until_more_traffic_decides():
    # 80 % kept of 30: below 85 %, but the interval reaches above it -> inconclusive
    lo, hi = wilson(24, 30)
    assert lo < 0.85 < hi
    classes = pair_classes(
        [PairedFrame(f"k{i}", "c", "default", "champion",
                     [(LabelBox("crate", 0.5, 0.5, 0.2, 0.2), 0.9)],
                     [(LabelBox("crate", 0.5, 0.5, 0.2, 0.2), 0.9)] * (i < 24))
         for i in range(30)], **MATCH)  # fmt: skip
    q = judge_pairing(classes, 30, Q)
    assert q.status == "inconclusive"
    assert "more traffic will tell" in q.checks[0].detail


def test_wilson_interval():
    lo, hi = wilson(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    assert wilson(0, 0) == (0.0, 1.0)


def test_mean_ap_of_a_perfect_and_a_blind_model():
    rng = np.random.default_rng(0)
    truths = [_scene(rng) for _ in range(20)]
    perfect = mean_ap([([(b, 0.9) for b in t], t) for t in truths])
    assert perfect["map50_95"] == pytest.approx(1.0, abs=1e-6) and perfect["frames"] == 20
    blind = mean_ap([([], t) for t in truths])
    assert blind["map50_95"] == 0.0
    # one of two boxes found, the other a false positive of another class
    half = mean_ap(
        [([(LabelBox("crate", 0.25, 0.5, 0.2, 0.2), 0.9), (LabelBox("cone", 0.9, 0.9, 0.05,
                                                                 0.05), 0.8)],
          [LabelBox("crate", 0.25, 0.5, 0.2, 0.2), LabelBox("crate", 0.75, 0.5, 0.2, 0.2)])]
    )  # fmt: skip
    assert half["per_class_ap50_95"] == {"crate": pytest.approx(0.5, abs=0.01)}
    assert half["boxes"] == 2


def test_labels_beat_the_pairing():
    # the champion's confident boxes are wrong (a class it confuses): the challenger that
    # "loses" them is right, and the labels say so
    frames, truths = _frames(40, challenger={}, champion={"swap": {"cone": "crate"}}, seed=5)
    pairing = judge_pairing(pair_classes(frames, **MATCH), len(frames), Q)
    assert pairing.status == "breach"
    champ = mean_ap([(f.champion, t) for f, t in zip(frames, truths, strict=True)])
    chall = mean_ap([(f.challenger, t) for f, t in zip(frames, truths, strict=True)])
    labels = judge_labels(chall, champ, Q, source="reviewed labels (audit)")
    out = decide_quality(pairing, labels)
    assert out.status == "ok" and out.evidence == "labels"
    assert [c.name for c in out.checks] == ["labels:map50_95"]
    assert out.reported == pairing.checks  # the pairing stays in the report
    # a worse challenger on the labels is a breach whatever the pairing says
    assert judge_labels(champ, chall, Q).status == "breach"
    # too few labeled frames: the labels do not decide
    few = {**champ, "frames": 3}
    assert judge_labels(chall, few, Q) is None


def test_label_store_round_trip_newest_wins_and_a_bad_part_is_named(tmp_path):
    from cvloop.adapters.label_store import LabeledFrame, read_labels, write_labels
    from cvloop.adapters.storage import LocalStorage
    from cvloop.core.errors import CvloopError

    store = LocalStorage(tmp_path)
    t = dt.datetime(2026, 11, 3, 12, tzinfo=dt.UTC)
    old = LabeledFrame(t, "cam-01", "frames/cam-01/2026-11-03/1.jpg",
                       [LabelBox("crate", 0.5, 0.5, 0.1, 0.1)], "audit", "ada",
                       t + dt.timedelta(hours=1))  # fmt: skip
    new = LabeledFrame(t, "cam-01", old.frame_key, [], "audit", "bob", t + dt.timedelta(hours=2))
    other = LabeledFrame(t + dt.timedelta(days=1), "cam-02", "frames/cam-02/x.jpg",
                         [LabelBox("cone", 0.2, 0.2, 0.1, 0.1)], "review", "ada", t)  # fmt: skip
    write_labels(store, [old, other])
    write_labels(store, [new])
    got = read_labels(store, t, t + dt.timedelta(days=3))
    assert set(got) == {old.frame_key, other.frame_key}
    assert got[old.frame_key].reviewer == "bob" and got[old.frame_key].boxes == []
    (box,) = got[other.frame_key].boxes
    assert box.label == "cone" and box.cx == pytest.approx(0.2) and box.w == pytest.approx(0.1)
    assert list(read_labels(store, t, t + dt.timedelta(days=3), [other.frame_key])) == [
        other.frame_key
    ]
    with pytest.raises(CvloopError, match="not normalized"):
        write_labels(store, [LabeledFrame(t, "c", "k", [LabelBox("crate", 40, 0.5, 0.1, 0.1)])])
    store.put_bytes("labels/date=2026-11-03/part-bad.parquet", b"not parquet")
    with pytest.raises(CvloopError, match=r"part-bad\.parquet"):
        read_labels(store, t, t + dt.timedelta(days=1))

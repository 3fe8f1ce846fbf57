"""The annotation suite (Great Expectations) and where new frames go (split planning)."""

from __future__ import annotations

import numpy as np
import pytest

from cvloop.core.frames import Candidate, FrameEntry, LabelBox, plan_split
from cvloop.core.validate import FrameToCheck, validate_annotations

OK = LabelBox("crate", 0.5, 0.5, 0.2, 0.2)
CLASSES = ["crate", "barrel", "cone"]


def _frame(name: str, boxes, readable: bool = True) -> FrameToCheck:
    return FrameToCheck(name, f"frames/{name}.jpg", readable, 200, 100, boxes)


@pytest.mark.parametrize(
    ("boxes", "readable", "rule"),
    [
        ([LabelBox("crate", 0.95, 0.5, 0.2, 0.2)], True, "box_inside_image"),
        ([LabelBox("crate", 0.5, 0.05, 0.2, 0.2)], True, "box_inside_image"),
        ([LabelBox("forklift", 0.5, 0.5, 0.2, 0.2)], True, "class_in_schema"),
        ([LabelBox("crate", 0.5, 0.5, 0.002, 0.3)], True, "not_degenerate"),
        ([LabelBox("crate", 0.5, 0.5, 0.01, 0.011)], True, "min_box_area"),
        ([LabelBox("crate", 0.5, 0.5, 0.98, 0.97)], True, "max_box_area"),
        ([OK, LabelBox("crate", 0.501, 0.5, 0.2, 0.2)], True, "no_duplicate_box"),
        ([OK], False, "image_readable"),
        ([], False, "image_readable"),
        ([LabelBox("crate", float("nan"), 0.5, 0.2, 0.2)], True, "coordinates_finite"),
        ([OK, LabelBox("cone", 0.5, 0.5, float("nan"), 0.2)], True, "coordinates_finite"),
    ],
)
def test_each_rule_quarantines_the_frame(boxes, readable, rule):
    frames = [
        _frame("good", [OK, LabelBox("cone", 0.2, 0.2, 0.1, 0.1)]),
        _frame("bad", boxes, readable),
    ]
    res = validate_annotations(
        frames, CLASSES, min_box_area=0.0002, max_box_area=0.9, duplicate_iou=0.95
    )
    assert res.valid == ["good"]
    assert res.quarantined == ["bad"]
    assert {v.rule for v in res.violations} == {rule}
    assert all(v.key == "frames/bad.jpg" for v in res.violations)


def test_clean_frames_pass_including_empty_ones_and_edge_snapped_boxes():
    frames = [
        _frame("a", [OK]),
        _frame("empty", []),
        _frame("edge", [LabelBox("cone", 0.1, 0.5, 0.2 + 0.4 / 200, 0.2)]),  # 0.2 px past 0
        _frame("two-classes-same-place", [OK, LabelBox("barrel", 0.5, 0.5, 0.2, 0.2)]),
    ]
    res = validate_annotations(
        frames, CLASSES, min_box_area=0.0001, max_box_area=0.9, duplicate_iou=0.95
    )
    assert res.valid == ["a", "empty", "edge", "two-classes-same-place"]
    assert res.violations == []


def _entry(sha: str, dh: str) -> FrameEntry:
    return FrameEntry(sha[:20], sha, "train", "", "", 0, dh, 0, "reviewed", 1, "v1")


def test_plan_split_holdout_quota_leakage_and_determinism():
    rng = np.random.default_rng(0)  # perceptual hashes far apart
    frames = [
        Candidate(f"{i:02x}" + "0" * 62, f"{int(rng.integers(0, 2**63)):016x}", i % 2 == 0)
        for i in range(20)
    ]
    # frame 3 is a near-duplicate (1 bit) of frame 2's perceptual hash
    frames[3] = Candidate(frames[3].sha256, f"{int(frames[2].dhash, 16) ^ 1:016x}", False)
    existing = [_entry(frames[0].sha256, frames[0].dhash)]
    kw = dict(training=existing, holdout=[], holdout_quota=3, val_share=0.5, near_dup_bits=4)
    plan = plan_split(frames, **kw)
    assert plan.already_present == [frames[0].sha256]
    assert plan.holdout == [frames[2].sha256, frames[4].sha256, frames[6].sha256]
    assert (frames[3].sha256, frames[2].sha256) in plan.held_back
    placed = plan.train + plan.val + plan.holdout + [h for h, _ in plan.held_back]
    assert sorted(placed) == sorted(f.sha256 for f in frames[1:])
    assert plan == plan_split(list(reversed(frames)), **kw)
    # the drift share caps the holdout: 2 drift frames -> at most 1
    few = [frames[1], frames[2], frames[4], frames[5]]
    assert len(plan_split(few, **{**kw, "holdout_quota": 50}).holdout) == 1


def test_plan_split_never_picks_a_holdout_frame_near_a_training_frame():
    near = Candidate("01" * 32, "00000000000000f1", True)  # 1 bit from a training frame
    far = Candidate("02" * 32, "ffffffff00000000", True)
    other = Candidate("03" * 32, "0f0f0f0f0f0f0f0f", True)
    training = [_entry("aa" * 32, "00000000000000f0")]
    plan = plan_split([near, far, other], training=training, holdout=[], holdout_quota=1,
                      val_share=0.0, near_dup_bits=4)  # fmt: skip
    assert plan.holdout == [far.sha256]
    assert near.sha256 in plan.train


def test_plan_split_never_puts_a_training_frame_in_the_holdout():
    f = Candidate("ab" * 32, "00000000000000ff", True)
    plan = plan_split([f], training=[_entry(f.sha256, f.dhash)], holdout=[], holdout_quota=5,
                      val_share=0.1, near_dup_bits=4)  # fmt: skip
    assert plan.holdout == [] and plan.already_present == [f.sha256]


def test_null_or_nan_coordinates_from_label_studio_are_quarantined_never_written():
    from cvloop.adapters.datasets import yolo_label_lines
    from cvloop.adapters.labelstudio import result_to_box
    from cvloop.core.errors import CvloopError

    drawn = {"x": 40, "y": 40, "width": 20, "height": 20, "rectanglelabels": ["crate"]}
    results = [
        {"type": "rectanglelabels", "value": {**drawn, "x": None}},  # null (a broken editor)
        {"type": "rectanglelabels", "value": {**drawn, "width": "NaN"}},  # a NaN string
        {"type": "rectanglelabels", "value": {k: v for k, v in drawn.items() if k != "y"}},
    ]
    boxes = [result_to_box(r) for r in results]  # no crash of the whole export
    res = validate_annotations(
        [_frame("ok", [OK]), *(_frame(f"bad{i}", [b]) for i, b in enumerate(boxes))],
        CLASSES, min_box_area=0.0002, max_box_area=0.9, duplicate_iou=0.95,
    )  # fmt: skip
    assert res.valid == ["ok"] and res.quarantined == ["bad0", "bad1", "bad2"]
    assert {v.rule for v in res.violations} == {"coordinates_finite"}
    assert "cx,cy,w,h=nan,0.5,0.2,0.2" in res.violations[0].detail  # the values are named
    with pytest.raises(CvloopError, match="not a finite number"):
        yolo_label_lines([boxes[1]], CLASSES)  # and a label file never gets one

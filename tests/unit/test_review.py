"""Edit rates, the review decision, Label Studio box conversion."""

from __future__ import annotations

import pytest

from cvloop.adapters.labelstudio import box_to_result, label_config, result_to_box
from cvloop.core.frames import LabelBox
from cvloop.core.review import (
    AgreementRule,
    DoubleLabel,
    compare_boxes,
    decide,
    edit_rate,
    pair_agreement,
    review_progress,
)

A = LabelBox("crate", 0.3, 0.3, 0.2, 0.2)
B = LabelBox("cone", 0.7, 0.7, 0.1, 0.2)


def _shift(b: LabelBox, dx: float, label: str | None = None) -> LabelBox:
    return LabelBox(label or b.label, b.cx + dx, b.cy, b.w, b.h)


@pytest.mark.parametrize(
    ("final", "expected"),
    [
        ([A, B], {"crate": {"kept": 1}, "cone": {"kept": 1}}),
        ([_shift(A, 0.03), B], {"crate": {"moved": 1}, "cone": {"kept": 1}}),
        ([_shift(A, 0.0, "barrel"), B], {"crate": {"relabelled": 1}, "cone": {"kept": 1}}),
        ([B], {"crate": {"deleted": 1}, "cone": {"kept": 1}}),
        (
            [A, B, LabelBox("barrel", 0.5, 0.1, 0.1, 0.1)],
            {"crate": {"kept": 1}, "cone": {"kept": 1}, "barrel": {"added": 1}},
        ),
        ([_shift(A, 0.5), B], {"crate": {"deleted": 1, "added": 1}, "cone": {"kept": 1}}),
    ],
)
def test_compare_boxes(final, expected):
    got = compare_boxes([A, B], final, iou_match=0.5, moved_iou=0.9)
    assert {c: {k: v for k, v in n.items() if v} for c, n in got.items()} == expected


def test_edit_rate_counts_every_kind_of_edit():
    assert edit_rate({"kept": 3, "moved": 1}) == 0.25
    assert edit_rate({"kept": 0, "deleted": 1, "added": 1}) == 1.0
    assert edit_rate({}) == 0.0


def _frames(n: int, every: int) -> list:
    """n reviewed frames with one crate each; every ``every``-th frame's crate is moved."""
    return [([A], [_shift(A, 0.03)] if i % every == 0 else [A]) for i in range(n)]


def test_stable_after_enough_frames_with_steady_windows():
    kw = dict(
        window_frames=10, stable_windows=3, stable_tolerance=0.05, frames_per_class=30,
        iou_match=0.5, moved_iou=0.9,
    )  # fmt: skip
    p = review_progress(_frames(29, 5), 100, ["crate", "cone"], ["crate"], **kw)
    assert p.classes["crate"].windows == [0.2, 0.2] and not p.stable
    p = review_progress(_frames(30, 5), 100, ["crate", "cone"], ["crate"], **kw)
    assert p.classes["crate"].windows == [0.2, 0.2, 0.2] and p.stable
    assert decide(p) == (True, "edit rate stable for crate")
    # a rate still falling is not stable
    falling = [([A], [_shift(A, 0.03)]) for _ in range(10)] + _frames(20, 5)
    p = review_progress(falling, 100, ["crate"], ["crate"], **kw)
    assert p.classes["crate"].windows == [1.0, 0.2, 0.2] and not p.stable
    go, why = decide(p)
    assert not go and "waiting for a stable edit rate" in why


def test_decide_all_reviewed_operator_and_deadline():
    kw = dict(
        window_frames=10, stable_windows=3, stable_tolerance=0.05, frames_per_class=200,
        iou_match=0.5, moved_iou=0.9,
    )  # fmt: skip
    done = review_progress(_frames(12, 5), 12, ["crate"], ["crate"], **kw)
    assert decide(done) == (True, "all 12 tasks reviewed")
    some = review_progress(_frames(5, 5), 12, ["crate"], ["crate"], **kw)
    assert decide(some)[0] is False
    assert decide(some, operator_go=True) == (True, "an operator said go")
    assert decide(some, deadline_passed=True)[0] is True
    none = review_progress([], 12, ["crate"], ["crate"], **kw)
    assert decide(none, deadline_passed=True)[0] is False


def test_watched_classes_default_to_the_reviewed_ones():
    kw = dict(
        window_frames=10, stable_windows=3, stable_tolerance=0.05, frames_per_class=1,
        iou_match=0.5, moved_iou=0.9,
    )  # fmt: skip
    p = review_progress(_frames(3, 2), 10, ["crate", "cone"], [], **kw)
    assert p.watched == ["crate"]


def test_label_studio_round_trip_keeps_the_box():
    box = LabelBox("cone", 0.25, 0.6, 0.1, 0.3)
    r = box_to_result(box, 256, 192, score=0.81234)
    assert r["value"]["x"] == pytest.approx(20.0) and r["value"]["height"] == pytest.approx(30.0)
    assert r["score"] == 0.8123
    back = result_to_box(r)
    assert back.label == "cone"
    assert (back.cx, back.cy, back.w, back.h) == pytest.approx((0.25, 0.6, 0.1, 0.3))
    assert result_to_box({"type": "choices", "value": {}}) is None


def test_label_config_lists_the_schema_classes():
    cfg = label_config(["crate", "a&b"])
    assert '<Label value="crate"/>' in cfg and '<Label value="a&amp;b"/>' in cfg
    assert 'toName="image"' in cfg and 'value="$image"' in cfg


def test_pair_agreement_is_the_f1_of_two_reviewers_boxes():
    crate2 = LabelBox("crate", 0.2, 0.2, 0.1, 0.1)
    # both drew the same crate; one also drew a second crate the other missed
    assert pair_agreement([A, crate2], [_shift(A, 0.01)], 0.5) == {"crate": (1, 3)}
    # the same box, read as two classes: neither class agrees
    cone = LabelBox("cone", A.cx, A.cy, A.w, A.h)
    assert pair_agreement([A], [cone], 0.5) == {"crate": (0, 1), "cone": (0, 1)}
    assert pair_agreement([], [], 0.5) == {}


def _double(tid: int, agree: bool, resolved: bool = False) -> DoubleLabel:
    cone = LabelBox("cone", A.cx, A.cy, A.w, A.h)
    return DoubleLabel(tid, [A], [A if agree else cone], resolved)


def test_reviewers_who_disagree_hold_the_review_until_the_frames_are_settled():
    kw = dict(
        window_frames=10, stable_windows=3, stable_tolerance=0.05, frames_per_class=200,
        iou_match=0.5, moved_iou=0.9,
    )  # fmt: skip
    rule = AgreementRule(min_agreement=0.8, min_boxes=10, iou_match=0.5)
    # 12 double-labeled frames: 6 agree, on 6 the second reviewer read the crate as a cone:
    # 12 + 6 crate boxes, 6 pairs agree -> crate F1 = 12/18
    doubles = [_double(i, agree=i >= 6) for i in range(12)]
    p = review_progress(_frames(12, 5), 12, ["crate", "cone"], ["crate"], **kw,
                        doubles=doubles, agreement=rule)  # fmt: skip
    crate = p.classes["crate"]
    assert (crate.double_frames, crate.agreed, crate.double_boxes) == (12, 6, 18)
    assert crate.agreement == pytest.approx(2 / 3) and crate.disagreements == [0, 1, 2, 3, 4, 5]
    # every task is reviewed, but the crate agreement (0.67) holds it
    go, why = decide(p)
    assert not go and "reviewers disagree" in why and "crate: 0.67" in why, why
    assert "6 unresolved (tasks 0, 1, 2, 3, 4 ...)" in why
    # the cone has 6 boxes: too few to judge, so it does not hold the review
    assert [c.name for c in p.disagreeing()] == ["crate"]
    assert p.as_dict()["disagreeing"] == ["crate"]
    assert p.as_dict()["classes"]["crate"]["agreement"] == pytest.approx(0.6667, abs=1e-4)
    # an operator or the deadline may still let it go, and the reason says what was overruled
    go, why = decide(p, operator_go=True)
    assert go and why.startswith("an operator said go (reviewers disagree")
    assert decide(p, deadline_passed=True)[0] is True
    # the ML lead settles the six frames (a ground-truth annotation): the review goes on
    settled = [_double(i, agree=i >= 6, resolved=i < 6) for i in range(12)]
    p = review_progress(_frames(12, 5), 12, ["crate", "cone"], ["crate"], **kw,
                        doubles=settled, agreement=rule)  # fmt: skip
    assert p.classes["crate"].agreement == pytest.approx(2 / 3) and not p.disagreeing()
    assert decide(p) == (True, "all 12 tasks reviewed")
    # 10 agreeing frames, 1 not: 11 + 10 crate boxes, F1 20/21 = 0.95 passes
    ok = [_double(i, agree=i > 0) for i in range(11)]
    p = review_progress(_frames(12, 5), 12, ["crate"], ["crate"], **kw,
                        doubles=ok, agreement=rule)  # fmt: skip
    assert p.classes["crate"].agreement == pytest.approx(20 / 21) and not p.disagreeing()
    # exactly at the floor passes: 8 of 12 agree -> 16/20 = 0.80
    at = [_double(i, agree=i >= 4) for i in range(12)]
    p = review_progress(_frames(12, 5), 12, ["crate"], ["crate"], **kw,
                        doubles=at, agreement=rule)  # fmt: skip
    assert p.classes["crate"].agreement == pytest.approx(0.8) and not p.disagreeing()

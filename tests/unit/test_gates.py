"""Gate logic: every gate, its failure reasons listed at once, missing metrics fail closed."""

from __future__ import annotations

import pytest

from cvloop.core.gates import evaluate_gates

CLASSES = ["crate", "barrel", "cone"]
KW = dict(
    holdout_map_tolerance_points=0.5,
    class_ap_tolerance_points=2.0,
    drift_slice_min_gain_points=1.0,
    new_class_min_ap=0.5,
    export_parity_points=0.5,
    int8_parity_points=1.5,
)


def _holdout(m: float, aps=(0.6, 0.5, 0.4), ece: float = 0.05) -> dict:
    out = {"map50_95": m, "ece": ece}
    out.update({f"ap50_95.{c}": a for c, a in zip(CLASSES, aps, strict=True)})
    out.update({f"ap50.{c}": a + 0.3 for c, a in zip(CLASSES, aps, strict=True)})
    return out


CHAMP = {"holdout": _holdout(0.50), "slice:camera cam-02": {"map50_95": 0.20}}
GOOD = {"holdout": _holdout(0.498), "slice:camera cam-02": {"map50_95": 0.35}}
ONNX_OK = {"onnx": {"status": "ok", "map50_95": 0.497}}


def _gate(champion=CHAMP, challenger=GOOD, slices=("camera cam-02",), exports=ONNX_OK, **kw):
    return evaluate_gates(champion, challenger, CLASSES, list(slices), exports, **{**KW, **kw})


def test_a_good_challenger_passes_every_gate():
    rep = _gate()
    assert rep.passed and rep.reasons == []
    assert [c.name for c in rep.checks] == [
        "holdout_map", "class_ap:crate", "class_ap:barrel", "class_ap:cone", "clean_map",
        "calibration", "drift_slice:camera cam-02", "export_parity:onnx",
    ]  # fmt: skip


def test_every_failing_reason_is_listed_at_once():
    bad = {
        "holdout": _holdout(0.40, aps=(0.3, 0.5, 0.4)),
        "slice:camera cam-02": {"map50_95": 0.205},
    }
    rep = _gate(challenger=bad, exports={"onnx": {"status": "ok", "map50_95": 0.39}})
    assert not rep.passed
    failed = [r.split(": ")[0] for r in rep.reasons]
    assert failed == [
        "holdout_map",
        "class_ap:crate",
        "drift_slice:camera cam-02",
        "export_parity:onnx",
    ]
    assert "-10.00 points" in rep.reasons[0]
    assert "+0.50 points; minimum gain +1.0" in rep.reasons[2]
    assert "REJECTED" in rep.markdown() and "**FAIL**" in rep.markdown()


@pytest.mark.parametrize(
    ("champion", "challenger", "failing"),
    [
        (None, GOOD, "holdout_map"),
        (CHAMP, {"slice:camera cam-02": {"map50_95": 0.4}}, "holdout_map"),
        (CHAMP, {**GOOD, "holdout": {"map50_95": 0.5}}, "class_ap:crate"),
        (CHAMP, {"holdout": _holdout(0.5)}, "drift_slice:camera cam-02"),
        ({"holdout": _holdout(0.5)}, GOOD, "drift_slice:camera cam-02"),
        (CHAMP, {**GOOD, "holdout": {**_holdout(0.5), "map50_95": float("nan")}}, "holdout_map"),
    ],
)
def test_a_missing_metric_fails_closed(champion, challenger, failing):
    rep = _gate(champion=champion, challenger=challenger)
    assert not rep.passed
    assert any(r.startswith(failing) and "missing metric" in r for r in rep.reasons)


def test_tolerances_are_inclusive_and_in_points():
    edge = {
        "holdout": _holdout(0.495, aps=(0.58, 0.5, 0.4)),
        "slice:camera cam-02": {"map50_95": 0.21},
    }
    assert _gate(challenger=edge, exports={}).passed
    worse = {**edge, "holdout": _holdout(0.4949, aps=(0.58, 0.5, 0.4))}
    assert _gate(challenger=worse, exports={}).reasons[0].startswith("holdout_map")


def test_new_class_needs_the_floor_and_exports_skip_or_fail():
    champ = {"holdout": {"map50_95": 0.5, "ap50_95.crate": 0.6, "ap50_95.barrel": 0.5}}
    chall = {"holdout": {**_holdout(0.5), "ap50.cone": 0.45}}
    rep = _gate(champion=champ, challenger=chall, slices=(), exports={
        "tensorrt_fp16": {"status": "skipped", "reason": "no CUDA device"},
        "tensorrt_int8": {"status": "failed", "reason": "calibration crashed"},
        "onnx": {"status": "ok", "map50_95": 0.51},
    })  # fmt: skip
    assert rep.reasons == [
        "class_ap:cone: new class (no champion baseline): AP50 0.4500 (minimum 0.5)",
        "export_parity:tensorrt_int8: export failed: calibration crashed",
        "export_parity:onnx: mAP50-95 .pt 0.5000 vs onnx 0.5100 (+1.00 points; limit ±0.5)",
    ]
    skipped = {c.name: c.detail for c in rep.checks if c.skipped}
    assert skipped["export_parity:tensorrt_fp16"] == "skipped: no CUDA device"
    assert "the champion has none" in skipped["calibration"]
    assert skipped["drift_slice"] == "no drift slice to gate: the run named none"


def test_int8_has_its_own_parity_limit():
    exports = {"tensorrt_int8": {"status": "ok", "map50_95": 0.487}}  # 1.1 points below .pt
    assert _gate(exports=exports).passed
    assert not _gate(exports={"tensorrt_fp16": {"status": "ok", "map50_95": 0.487}}).passed


def test_small_slices_are_judged_in_the_pooled_drift_slice():
    champ = {**CHAMP, "slice:drift:all": {"map50_95": 0.30}}
    better = {
        **GOOD,
        "slice:camera cam-02": {"map50_95": 0.19},
        "slice:drift:all": {"map50_95": 0.33},
    }
    frames = {"camera cam-02": 12, "drift:all": 50}
    kw = {"champion": champ, "slices": ("camera cam-02", "drift:all"), "slice_frames": frames}
    rep = _gate(challenger=better, min_slice_frames=20, **kw)
    assert rep.passed  # 12 frames do not gate alone; the pooled 50 improved by 3 points
    small = next(c for c in rep.checks if c.name == "drift_slice:camera cam-02")
    assert small.skipped and "12 holdout frames < 20" in small.detail
    # the same slice with enough frames gates on its own, and the pooled slice always gates
    assert _gate(challenger=better, min_slice_frames=10, **kw).reasons == [
        "drift_slice:camera cam-02: mAP50-95 0.2000 -> 0.1900 (-1.00 points; minimum gain +1.0)"
    ]
    flat = {**better, "slice:drift:all": {"map50_95": 0.30}}
    assert _gate(challenger=flat, min_slice_frames=20, **kw).reasons == [
        "drift_slice:drift:all: mAP50-95 0.3000 -> 0.3000 (+0.00 points; minimum gain +1.0)"
    ]
    assert not _gate(challenger=GOOD, min_slice_frames=20, **kw).passed  # pooled slice missing


def test_no_check_at_all_is_not_a_pass():
    assert not evaluate_gates(None, None, [], [], {}, **KW).passed


def test_gate_reasons_tag_stays_valid_json_within_the_limit():
    import json

    from cvloop.stages.gate import _fit_json

    reasons = [f"class_ap:c{i}: " + "x" * 990 for i in range(10)]
    text = _fit_json(reasons, 4900)
    got = json.loads(text)
    assert len(text) <= 4900 and got[:-1] == reasons[: len(got) - 1]
    assert got[-1] == f"... and {10 - len(got) + 1} more (gate/report.json)"
    assert json.loads(_fit_json(reasons[:2], 4900)) == reasons[:2]


def test_a_class_added_to_the_schema_is_judged_alone_and_the_rest_apples_to_apples():
    """The champion knows three classes, the challenger four: mAP gates compare the mean AP
    over the three; the new class must reach its floor; its drift slice defers to it."""
    four = [*CLASSES, "pallet"]
    champ = {
        "holdout": _holdout(0.50),
        "slice:drift:class pallet": {"map50_95": 0.5, "ap50_95.crate": 0.6},
        "slice:drift:all": {"map50_95": 0.5, **{f"ap50_95.{c}": 0.5 for c in CLASSES}},
    }
    # overall mAP over 4 classes drops (the new class is weak), old classes hold
    chall_hold = {
        **_holdout(0.40, aps=(0.61, 0.5, 0.4)),
        "ap50_95.pallet": 0.1,
        "ap50.pallet": 0.55,
    }
    chall = {
        "holdout": chall_hold,
        "slice:drift:class pallet": {"map50_95": 0.2},
        "slice:drift:all": {"map50_95": 0.3, **{f"ap50_95.{c}": 0.52 for c in CLASSES}},
    }
    kw = dict(**KW, new_classes=["pallet"])
    slices = ["drift:class pallet", "drift:all"]
    rep = evaluate_gates(champ, chall, four, slices, ONNX_OK, **kw)
    by = {c.name: c for c in rep.checks}
    assert by["holdout_map"].passed, by["holdout_map"].detail  # 0.5 -> 0.5033 over 3 classes
    assert "over the 3 classes both know" in by["holdout_map"].detail
    assert by["class_ap:pallet"].passed and "no champion baseline" in by["class_ap:pallet"].detail
    assert by["drift_slice:drift:class pallet"].skipped
    assert by["drift_slice:drift:all"].skipped  # only a new class's slice: its gate judges
    # with a real drift slice as well, the pooled slice gates over the old classes
    champ["slice:camera cam-02"] = {"map50_95": 0.5, "ap50_95.crate": 0.3}
    chall["slice:camera cam-02"] = {"map50_95": 0.4, "ap50_95.crate": 0.35}
    rep = evaluate_gates(champ, chall, four, ["camera cam-02", *slices], ONNX_OK, **kw)
    by = {c.name: c for c in rep.checks}
    assert by["drift_slice:camera cam-02"].passed  # crate 0.30 -> 0.35, not 0.5 -> 0.4
    assert by["drift_slice:drift:all"].passed and not by["drift_slice:drift:all"].skipped
    assert "+2.00 points" in by["drift_slice:drift:all"].detail
    # export parity still compares the challenger's own full mAP
    assert not by["export_parity:onnx"].passed and ".pt 0.4000" in by["export_parity:onnx"].detail
    # a new class below its floor, or an old class regressing, rejects
    weak = {**chall, "holdout": {**chall_hold, "ap50.pallet": 0.3, "ap50_95.crate": 0.5}}
    rep = evaluate_gates(champ, weak, four, slices, ONNX_OK, **kw)
    failed = {c.name for c in rep.checks if not c.passed}
    assert {"class_ap:pallet", "class_ap:crate"} <= failed
    # without new_classes, the same numbers compare all-class mAP: the holdout gate fails
    plain = evaluate_gates(champ, chall, four, slices, ONNX_OK, **KW)
    assert not {c.name: c for c in plain.checks}["holdout_map"].passed


def test_a_camera_group_may_not_regress_and_a_small_one_is_only_reported():
    champ = {**CHAMP, "slice:group:north": {"map50_95": 0.40},
             "slice:group:default": {"map50_95": 0.52}}  # fmt: skip
    worse_north = {**GOOD, "slice:group:north": {"map50_95": 0.30},
                   "slice:group:default": {"map50_95": 0.53}}  # fmt: skip
    rep = _gate(champion=champ, challenger=worse_north,
                group_slices={"group:north": 40, "group:default": 200}, min_slice_frames=10)  # fmt: skip
    assert not rep.passed
    assert [r.split(": ")[0] for r in rep.reasons] == ["group_map:north"]
    assert "-10.00 points" in rep.reasons[0] and "on 40 frames" in rep.reasons[0]
    small = _gate(champion=champ, challenger=worse_north,
                  group_slices={"group:north": 5, "group:default": 200}, min_slice_frames=10)  # fmt: skip
    assert small.passed
    (north,) = [c for c in small.checks if c.name == "group_map:north"]
    assert north.skipped and "judged within the whole holdout" in north.detail


def test_the_clean_part_of_the_holdout_may_not_pay_for_the_drift_gain():
    """The drift slice improves a lot and the whole holdout holds, but the frames no drift
    touched got worse: rejected, naming the clean part."""
    champ = {**CHAMP, "slice:clean": {"map50_95": 0.55}}
    chall = {**GOOD, "slice:clean": {"map50_95": 0.53}}
    kw = {"clean_frames": 300, "holdout_frames": 350, "min_slice_frames": 20}
    rep = _gate(champion=champ, challenger=chall, **kw)
    assert rep.reasons == ["clean_map: mAP50-95 0.5500 -> 0.5300 on 300 clean frames "
                           "(-2.00 points; tolerance -0.5)"]  # fmt: skip
    assert _gate(champion=champ, challenger={**GOOD, "slice:clean": {"map50_95": 0.546}},
                 **kw).passed  # within the tolerance  # fmt: skip
    # clean metrics missing while a clean part exists: fails closed
    missing = _gate(champion=champ, challenger=GOOD, **kw)
    assert any(r.startswith("clean_map") and "missing metric" in r for r in missing.reasons)
    # a holdout with no drift frames, or a small clean part: judged by the whole holdout
    for frames, why in ((350, "the whole holdout is clean"), (12, "12 holdout clean frames"),
                        (0, "no clean part")):  # fmt: skip
        rep = _gate(champion=champ, challenger=chall, **{**kw, "clean_frames": frames})
        row = next(c for c in rep.checks if c.name == "clean_map")
        assert row.skipped and row.passed and why in row.detail


def test_calibration_may_not_get_worse_beyond_the_tolerance():
    worse = {**GOOD, "holdout": _holdout(0.498, ece=0.09)}
    rep = _gate(challenger=worse, calibration_tolerance=0.03)
    assert rep.reasons == ["calibration: ECE 0.0500 -> 0.0900 (+0.0400; tolerance +0.03)"]
    assert _gate(challenger={**GOOD, "holdout": _holdout(0.498, ece=0.08)},
                 calibration_tolerance=0.03).passed  # fmt: skip
    no_boxes = {**GOOD, "holdout": {k: v for k, v in GOOD["holdout"].items() if k != "ece"}}
    assert any(
        "missing metric: challenger holdout ECE" in r for r in _gate(challenger=no_boxes).reasons
    )


def test_a_run_without_drift_slices_says_why_in_the_report():
    note = (
        "no drift anywhere: the latest monitor check, monitor-202650 (2026-12-07), flagged no slice"
    )
    rep = _gate(slices=(), drift_note=note)
    row = next(c for c in rep.checks if c.name == "drift_slice")
    assert rep.passed and row.skipped and row.detail == f"no drift slice to gate: {note}"
    assert rep.notes == [f"drift slices: none ({note})"] and note in rep.markdown()
    named = _gate(drift_note="the latest monitor check, monitor-202650 (2026-12-07), flagged them")
    assert named.notes == ["drift slices: camera cam-02 (the latest monitor check, "
                           "monitor-202650 (2026-12-07), flagged them)"]  # fmt: skip
    assert named.as_dict()["notes"] == named.notes


def test_the_challenger_may_not_break_where_a_worse_camera_gives_worse_frames():
    """Robustness (seed 002): on the holdout with noise, blur, heavy JPEG or dim light, the
    challenger may not fall behind the champion beyond the tolerance; a missing one fails."""
    champ = {**CHAMP, "robust:noise": {"map50_95": 0.40}, "robust:blur": {"map50_95": 0.42}}
    chall = {**GOOD, "robust:noise": {"map50_95": 0.37}, "robust:blur": {"map50_95": 0.43}}
    rep = _gate(champion=champ, challenger=chall, robustness_corruptions=["noise", "blur"],
                robustness_tolerance_points=2.0)  # fmt: skip
    assert rep.reasons == ["robustness:noise: mAP50-95 on the holdout with noise 0.4000 -> "
                           "0.3700 (-3.00 points; tolerance -2.0)"]  # fmt: skip
    assert next(c for c in rep.checks if c.name == "robustness:blur").passed
    missing = _gate(champion=champ, challenger=chall, robustness_corruptions=["jpeg"])
    assert missing.reasons == ["robustness:jpeg: missing metric: champion mAP50-95 on the jpeg "
                               "holdout, challenger mAP50-95 on the jpeg holdout (fails closed)"]  # fmt: skip

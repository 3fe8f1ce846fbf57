"""Capture events: frames of one camera close in time (a burst, a scene) stay on one side of
the train / holdout line; the split, the holdout additions and the leakage check work on
events, and the leakage report counts exact, near-duplicate and same-event overlaps."""

from __future__ import annotations

import numpy as np

from cvloop.core.frames import (
    IMPORTED_CAMERA,
    Candidate,
    FrameEntry,
    capture_events,
    check_overlap,
    plan_split,
)

GAP = 10_000  # ms
T0 = 1_756_684_800_000


def _dhash(i: int) -> str:
    return f"{int(np.random.default_rng(i).integers(0, 2**63)):016x}"  # far apart


def _sha(i: int) -> str:
    return f"{i:04x}" + "0" * 60


def _cand(i: int, camera: str, t_s: float, drift: bool = True) -> Candidate:
    return Candidate(_sha(i), _dhash(i), drift, camera, T0 + int(t_s * 1000))


def _entry(i: int, camera: str, t_s: float, split: str = "train") -> FrameEntry:
    return FrameEntry(_sha(i)[:20], _sha(i), split, "", camera, T0 + int(t_s * 1000),
                      _dhash(i), 1, "reviewed", 1, "dataset-v1")  # fmt: skip


def test_frames_chain_into_events_per_camera_and_imported_frames_stand_alone():
    frames = [("a", "cam-1", 0), ("b", "cam-1", 8_000), ("c", "cam-1", 16_000),  # a chain
              ("d", "cam-1", 60_000), ("e", "cam-2", 1_000),  # a new event; another camera
              ("f", IMPORTED_CAMERA, 0), ("g", IMPORTED_CAMERA, 0)]  # fmt: skip
    ev = capture_events(frames, GAP)
    assert ev["a"] == ev["b"] == ev["c"] == "cam-1@0"
    assert ev["d"] == "cam-1@60000" and ev["e"] == "cam-2@1000"
    assert ev["f"] == "f" and ev["g"] == "g"
    assert len(set(capture_events(frames, 0).values())) == 7  # 0: events off


def test_the_holdout_takes_whole_events_and_their_mates_never_train():
    # 3 bursts of 4 frames on the drift camera (1 s apart, a minute between bursts)
    frames = [_cand(b * 4 + k, "cam-02", b * 60 + k) for b in range(3) for k in range(4)]
    kw = dict(training=[], holdout=[], val_share=0.2, near_dup_bits=4, event_gap_ms=GAP)
    plan = plan_split(frames, holdout_quota=4, max_drift_share=0.5, **kw)
    ev = capture_events([(f.sha256, f.camera, f.ts_ms) for f in frames], GAP)
    assert len(plan.holdout) == 4 and len({ev[s] for s in plan.holdout}) == 1  # one burst
    trained = plan.train + plan.val
    assert len(trained) == 8 and not {ev[s] for s in trained} & {ev[s] for s in plan.holdout}
    # a burst is kept together in train or val too
    for s in trained:
        mates = [x for x in trained if ev[x] == ev[s]]
        assert all((x in plan.val) == (s in plan.val) for x in mates)
    # a quota smaller than any burst: part of one, its other frames held back (not trained)
    small = plan_split(frames, holdout_quota=2, max_drift_share=0.5, **kw)
    assert len(small.holdout) == 2
    burst = ev[small.holdout[0]]
    assert {s for s, _ in small.held_back} == {s for s in ev if ev[s] == burst} - set(small.holdout)
    assert not {ev[s] for s in small.train + small.val} & {burst}


def test_a_frame_of_an_event_the_model_trained_on_never_goes_to_the_holdout():
    training = [_entry(100, "cam-02", 0)]
    same = _cand(1, "cam-02", 5)  # 5 s after a training frame: the same burst
    later = _cand(2, "cam-02", 600)
    plan = plan_split([same, later], training=training, holdout=[], holdout_quota=2,
                      val_share=0.0, near_dup_bits=4, max_drift_share=1.0, event_gap_ms=GAP)  # fmt: skip
    assert plan.holdout == [later.sha256] and same.sha256 in plan.train
    # and a new frame of a holdout frame's event is held back from training
    holdout = [_entry(200, "cam-02", 1000, "holdout")]
    mate = _cand(3, "cam-02", 1003, drift=False)
    plan = plan_split([mate], training=[], holdout=holdout, holdout_quota=0, val_share=0.0,
                      near_dup_bits=4, event_gap_ms=GAP)  # fmt: skip
    assert plan.held_back == [(mate.sha256, holdout[0].sha256)] and plan.train == []


def test_the_leakage_report_counts_exact_near_and_same_event_overlaps():
    training = [_entry(1, "cam-01", 0), _entry(2, "cam-01", 100), _entry(3, "cam-03", 500)]
    near = FrameEntry(_sha(10)[:20], _sha(10), "holdout", "", "cam-09", T0,
                      f"{int(_dhash(2), 16) ^ 3:016x}", 1, "reviewed", 1, "holdout-v1")  # fmt: skip
    holdout = [
        _entry(1, "cam-01", 0, "holdout"),  # the same bytes
        near,  # 2 bits from a training frame
        _entry(11, "cam-03", 504, "holdout"),  # 4 s after a training frame
        _entry(12, "cam-03", 900, "holdout"),  # clean
    ]
    over = check_overlap(holdout, training, 4, GAP)
    assert over.counts() == {"exact": 1, "near_duplicate": 1, "same_event": 1}
    assert over.events == [(_sha(11)[:20], _sha(3)[:20])] and not over.clean
    assert check_overlap(holdout, training, 4).counts()["same_event"] == 0  # events off
    # versions made before events were checked: only overlaps with a new frame count
    assert check_overlap(holdout, training, 4, GAP, new={_sha(12)}).events == []
    assert len(check_overlap(holdout, training, 4, GAP, new={_sha(11)}).events) == 1

"""Prefilter and selection (runbook step 2): edge cases kept, fps cap, budget, caps, drift
weight, exploration share, reasons recorded, deterministic."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cvloop.adapters.detector import Detections
from cvloop.adapters.parquet import read_parquet
from cvloop.config.params import PrefilterParams, SelectParams
from cvloop.core.selection import Scored, cap_fps, edge_reasons, keep_events, select, uncertainty_of
from cvloop.sim.fleet.scene import encode_jpeg
from cvloop.stages.prefilter import score_frames


def test_uncertainty_peaks_at_one_half():
    assert uncertainty_of(np.array([0.5])) == pytest.approx(1.0)
    assert uncertainty_of(np.array([0.99])) == pytest.approx(0.02)
    assert uncertainty_of(np.array([])) == 0.5


@pytest.mark.parametrize(
    ("confs", "expected"),
    [
        ([], ["edge:empty"]),
        ([0.4, 0.6], ["edge:low_confidence"]),
        ([0.995], ["edge:high_confidence"]),
        ([0.8] * 51, ["edge:many_detections"]),
        ([0.8, 0.9], []),
    ],
)
def test_edge_cases_of_seed_001(confs, expected):
    assert edge_reasons(np.array(confs), 0.7, 0.99, 50) == expected


class _FakeDetector:
    """Pure-logic stand-in: returns preset detections per frame (real ONNX in integration)."""

    class_names = ("crate", "barrel", "cone")

    def __init__(self, per_frame):
        self.per_frame = list(per_frame)
        self.batches = []

    def predict(self, images, conf=0.25):
        self.batches.append(len(images))
        out = []
        for _ in images:
            confs, classes = self.per_frame.pop(0)
            n = len(confs)
            out.append(
                Detections(
                    np.tile([[0.1, 0.1, 0.3, 0.3]], (n, 1)).astype(np.float32),
                    np.array(confs, np.float32),
                    np.array(classes, np.int64),
                )
            )
        return out


def test_scoring_streams_in_batches_and_skips_unreadable_frames():
    jpeg = encode_jpeg(np.zeros((32, 32, 3), np.uint8))
    frames = [(f"k{i}", "cam-01", i * 1000, jpeg) for i in range(5)]
    frames.insert(2, ("bad", "cam-01", 1500, b"garbage"))
    det = _FakeDetector(
        [([0.9], [0]), ([], []), ([0.55, 0.6], [1, 2]), ([0.95], [2]), ([0.3], [0])]
    )
    errors = []
    out = list(
        score_frames(
            frames,
            det,
            PrefilterParams(
                conf=0.25,
                low_confidence=0.7,
                high_confidence=0.99,
                many_detections=50,
                batch_size=2,
            ),
            on_error=lambda k, e: errors.append(k),
        )
    )
    assert det.batches == [2, 2, 1]
    assert [s.key for s in out] == ["k0", "k1", "k2", "k3", "k4"] and errors == ["bad"]
    assert out[1].reasons == ["edge:empty"]
    assert out[2].labels == ["barrel", "cone"] and "edge:low_confidence" in out[2].reasons
    assert out[0].detections[0]["label"] == "crate"
    assert out[0].detections[0]["conf"] == pytest.approx(0.9)
    kept = list(keep_events(out, ordinary_share=0.0, empty_share=0.0))
    assert [s.key for s in kept] == ["k2", "k4"]  # the low-confidence edge cases only
    kept = list(keep_events(out, ordinary_share=1.0, empty_share=0.0))
    assert [s.key for s in kept] == ["k0", "k2", "k3", "k4"]


def test_event_driven_sampling_keeps_edges_and_drift_and_a_share_of_the_rest():
    def frame(i, cam="cam-01", confs=(0.9,), labels=("crate",)):
        c = np.asarray(confs, float)
        reasons = (["detections"] if len(c) else []) + edge_reasons(c, 0.7, 0.99, 50)
        return Scored(f"k{i:05d}", cam, i * 1000, len(c), float(c.max()) if len(c) else 0.0,
                      uncertainty_of(c), list(labels) if len(c) else [], reasons)  # fmt: skip

    frames = [frame(i) for i in range(10_000)]  # ordinary: confident detections only
    frames += [frame(10_000 + i, confs=()) for i in range(2_000)]  # empty
    frames += [frame(20_000 + i, confs=(0.4,)) for i in range(50)]  # edge: low confidence
    frames += [frame(30_000 + i, cam="cam-09") for i in range(40)]  # a drift camera
    frames += [frame(40_000 + i, labels=("cone",)) for i in range(30)]  # a drift class
    counts: dict = {}
    kept = list(keep_events(frames, ordinary_share=0.01, empty_share=0.05,
                            drift_cameras={"cam-09"}, drift_classes={"cone"},
                            counts=counts))  # fmt: skip
    c1, c9 = counts["cam-01"], counts["cam-09"]
    assert c1["in"] == 12_080 and c9 == {**c9, "in": 40, "drift": 40, "dropped": 0}
    assert c1["edge"] == 50 and c1["drift"] == 30  # every edge case and drift-class frame
    assert 70 <= c1["ordinary_kept"] <= 130  # ~1 % of 10,000
    assert 70 <= c1["empty_kept"] <= 130  # ~5 % of 2,000
    assert c1["in"] == sum(
        c1[k] for k in ("edge", "drift", "ordinary_kept", "empty_kept", "dropped")
    )
    assert len(kept) == 50 + 30 + 40 + c1["ordinary_kept"] + c1["empty_kept"]
    assert sum("sampled:ordinary" in s.reasons for s in kept) == c1["ordinary_kept"]
    # the same frames on a re-run (a hash of the key, not a random draw)
    again = [s.key for s in keep_events([frame(i) for i in range(10_000)], ordinary_share=0.01,
                                        empty_share=0.05)]  # fmt: skip
    assert again == [s.key for s in kept if "sampled:ordinary" in s.reasons]


def _scored(n, cams=("cam-01", "cam-02", "cam-03"), seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        labels = sorted({["crate", "barrel", "cone"][int(rng.integers(0, 3))]})
        u = float(rng.random())
        out.append(
            Scored(
                f"k{i:04d}",
                cams[i % len(cams)],
                i * 10_000,
                1,
                1 - u / 2,
                u,
                labels,
                ["detections"],
            )
        )
    return out


def test_fps_cap_keeps_one_frame_per_second_per_camera():
    frames = [
        Scored(f"k{i}", "cam-01", 1000 + i * 300, 1, 0.8, u, ["crate"], [])
        for i, u in enumerate([0.1, 0.9, 0.2, 0.3, 0.1, 0.1, 0.8])
    ]
    kept = cap_fps(frames, fps=1.0)
    ts = [f.ts_ms for f in kept]
    assert all(b - a >= 1000 for a, b in itertools.pairwise(ts))
    assert kept[0].key == "k1"  # within the first second, the most uncertain frame


def test_selection_respects_budget_caps_and_records_why():
    frames = _scored(600)
    sel = select(
        frames,
        SelectParams(
            budget=100,
            per_class_cap=60,
            per_camera_cap=45,
            exploration_share=0.1,
            seed=1,
            drift_slice_weight=3.0,
        ),
        drift_cameras={"cam-02"},
        drift_classes=set(),
    )
    assert len(sel) == 100
    explore = [s for s in sel if s.why[0] == "exploration (random)"]
    assert len(explore) == 10
    top = [s for s in sel if s not in explore]
    cams = {c: sum(s.camera == c for s in top) for c in ("cam-01", "cam-02", "cam-03")}
    assert max(cams.values()) <= 45
    assert cams["cam-02"] == 45  # the drift camera weighs more: it fills its cap first
    for c in ("crate", "barrel", "cone"):
        assert sum(c in s.labels for s in top) <= 60
    assert all(s.why[0].startswith("uncertainty") for s in top)
    assert all("drift:camera cam-02" in s.why for s in top if s.camera == "cam-02")


def test_selection_is_deterministic_and_uncertainty_ordered():
    frames = _scored(300)
    a = select(
        frames,
        SelectParams(
            budget=50,
            per_class_cap=1000,
            per_camera_cap=1000,
            exploration_share=0.0,
            seed=3,
            drift_slice_weight=3.0,
        ),
        drift_cameras=set(),
        drift_classes=set(),
    )
    b = select(
        frames,
        SelectParams(
            budget=50,
            per_class_cap=1000,
            per_camera_cap=1000,
            exploration_share=0.0,
            seed=3,
            drift_slice_weight=3.0,
        ),
        drift_cameras=set(),
        drift_classes=set(),
    )
    assert [s.key for s in a] == [s.key for s in b]
    threshold = min(s.score for s in a)
    assert sum(f.uncertainty > threshold for f in frames) <= 50


def test_small_pools_select_everything():
    frames = _scored(20)
    sel = select(
        frames,
        SelectParams(
            budget=100,
            per_class_cap=5,
            per_camera_cap=5,
            exploration_share=0.1,
            seed=0,
            drift_slice_weight=2,
        ),
        drift_cameras=set(),
        drift_classes=set(),
    )
    assert len(sel) == 20 and len({s.key for s in sel}) == 20


def test_selection_table_roundtrips_through_parquet():

    from cvloop.stages.prefilter import to_parquet

    frames = _scored(10)
    for f in frames:
        f.detections = [
            {"label": f.labels[0], "conf": 0.9, "cx": 0.5, "cy": 0.5, "w": 0.1, "h": 0.2}
        ]
    sel = select(
        frames,
        SelectParams(
            budget=5,
            per_class_cap=10,
            per_camera_cap=10,
            exploration_share=0.2,
            seed=0,
            drift_slice_weight=2,
        ),
        drift_cameras={"cam-01"},
        drift_classes=set(),
    )
    rows = read_parquet(to_parquet(sel)).to_pylist()
    assert [r["key"] for r in rows] == [s.key for s in sel]
    assert all(r["detections"][0]["conf"] == 0.9 for r in rows)
    assert all(r["why"] for r in rows)

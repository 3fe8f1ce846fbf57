"""The synthetic fleet: deterministic, drift scenarios that change the pixels, valid truth."""

from __future__ import annotations

import datetime as dt
import hashlib

import numpy as np
import pytest

from cvloop.adapters.storage import LocalStorage
from cvloop.core.errors import ConfigError
from cvloop.sim.fleet.generate import FleetConfig, Scenario, frame_refs, generate_fleet, render_ref
from cvloop.sim.fleet.scene import camera_spec, encode_jpeg, render

DAY = dt.date(2026, 10, 5)


def _digest(cfg, ref) -> str:
    px, boxes = render_ref(cfg, ref)
    return hashlib.sha256(encode_jpeg(px) + repr(boxes).encode()).hexdigest()


def test_same_seed_same_bytes_different_seed_different_bytes():
    a, b = FleetConfig(seed=7), FleetConfig(seed=7)
    refs_a, refs_b = frame_refs(a, "cam-01", DAY), frame_refs(b, "cam-01", DAY)
    assert refs_a == refs_b
    assert [_digest(a, r) for r in refs_a[:6]] == [_digest(b, r) for r in refs_b[:6]]
    c = FleetConfig(seed=8)
    assert _digest(c, frame_refs(c, "cam-01", DAY)[0]) != _digest(a, refs_a[0])


def test_generation_writes_identical_stores(tmp_path):
    cfg = FleetConfig(seed=3, cameras=("cam-01", "cam-02"), bursts_per_day=2, frames_per_burst=2)
    for name in ("a", "b"):
        generate_fleet(cfg, DAY, 2, str(tmp_path / name), str(tmp_path / f"{name}-truth"))
    sa, sb = LocalStorage(tmp_path / "a"), LocalStorage(tmp_path / "b")
    keys = sa.keys("frames/")
    assert len(keys) == 2 * 2 * 2 * 2 and keys == sb.keys("frames/")
    assert all(sa.get_bytes(k) == sb.get_bytes(k) for k in keys)
    truth = LocalStorage(tmp_path / "a-truth")
    assert truth.keys() == [
        "cam-01/2026-10-05.jsonl",
        "cam-01/2026-10-06.jsonl",
        "cam-02/2026-10-05.jsonl",
        "cam-02/2026-10-06.jsonl",
    ]
    # truth lives apart from the frame store: nothing on the model path can read it
    assert not sa.keys("truth") and not any("jsonl" in k for k in sa.keys())
    # a re-run resumes: nothing is rewritten
    rep = generate_fleet(cfg, DAY, 2, str(tmp_path / "a"), str(tmp_path / "a-truth"))
    assert rep.frames_written == 0 and rep.frames_skipped == 16


def test_frames_are_bursts_with_timestamps_in_the_day():
    cfg = FleetConfig(bursts_per_day=12, frames_per_burst=4, burst_fps=2.0)
    refs = frame_refs(cfg, "cam-03", DAY)
    assert len(refs) == 48
    midnight = dt.datetime.combine(DAY, dt.time(), tzinfo=dt.UTC).timestamp() * 1000
    assert all(midnight <= r.ts_ms < midnight + 86_400_000 for r in refs)
    burst = refs[:4]
    assert [r.ts_ms - burst[0].ts_ms for r in burst] == [0, 500, 1000, 1500]
    assert len({r.event for r in refs}) == 12
    assert refs[0].key == f"frames/cam-03/2026-10-05/{refs[0].ts_ms}.jpg"


def test_boxes_are_normalized_and_labelled_with_known_classes():
    cfg = FleetConfig()
    n = 0
    for ref in frame_refs(cfg, "cam-02", DAY)[::4]:
        _, boxes = render_ref(cfg, ref)
        for b in boxes:
            n += 1
            assert b.label in ("crate", "barrel", "cone")
            assert 0 < b.w <= 1 and 0 < b.h <= 1
            assert b.cx - b.w / 2 + 1e-6 >= 0 and b.cx + b.w / 2 <= 1 + 1e-6
    assert n > 10


@pytest.mark.parametrize("name", ["night", "weather", "new-class-look"])
def test_scenarios_change_the_pixels(name):
    cam = camera_spec("cam-01", 7)
    event = next(e for e in range(50) if any(b.label == "crate" for b in render(cam, e, 0, 160)[1]))
    clean, boxes = render(cam, event, 0, 160)
    drifted, drifted_boxes = render(cam, event, 0, 160, frozenset({name}))
    assert boxes == drifted_boxes  # same scene, same truth
    assert np.abs(clean.astype(int) - drifted.astype(int)).mean() > 2
    if name == "night":
        assert drifted.mean() < clean.mean() * 0.5


def test_scenario_is_active_at_its_cameras_from_its_date():
    cfg = FleetConfig(
        scenarios=(
            Scenario.parse("night@2026-10-10:cam-01,cam-02"),
            Scenario.parse("new-camera@2026-10-12:new-01"),
        )
    )
    assert cfg.scenarios_at("cam-01", dt.date(2026, 10, 9)) == frozenset()
    assert cfg.scenarios_at("cam-01", dt.date(2026, 10, 10)) == {"night"}
    assert cfg.scenarios_at("cam-03", dt.date(2026, 10, 20)) == frozenset()
    assert "new-01" in cfg.all_cameras()
    assert frame_refs(cfg, "new-01", dt.date(2026, 10, 11)) == []
    assert frame_refs(cfg, "new-01", dt.date(2026, 10, 12))


def test_new_camera_has_its_own_viewpoint_and_smaller_objects():
    old, new = camera_spec("cam-01", 7), camera_spec("new-01", 7)
    assert new.horizon < 0.1 < old.horizon
    assert new.near_size < old.near_size / 2


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("fog@2026-10-01", "unknown scenario"),
        ("night@2026-13-01", "bad scenario"),
        ("night", "bad scenario"),
        ("night@2026-10-05..2026-10-01", "ends before it starts"),
        ("new-camera@2026-10-01:cam-09", "each starting with 'new-'"),
    ],
)
def test_bad_scenarios_are_refused_with_the_fix(text, error):
    with pytest.raises(ConfigError, match=error):
        Scenario.parse(text)


def test_video_clip_is_written_with_per_frame_truth(tmp_path):
    import cv2

    cfg = FleetConfig(cameras=("cam-01",), bursts_per_day=1, frames_per_burst=1, image_size=96)
    rep = generate_fleet(cfg, DAY, 1, str(tmp_path / "s"), str(tmp_path / "t"), video_seconds=2)
    assert rep.videos_written == 1
    key = LocalStorage(tmp_path / "s").keys("videos/")[0]
    cap = cv2.VideoCapture(str(tmp_path / "s" / key))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 60
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(30)
    lines = (
        LocalStorage(tmp_path / "t")
        .get_text(key.replace("videos/", "videos/").replace(".mp4", ".jsonl"))
        .splitlines()
    )
    assert len(lines) == 60

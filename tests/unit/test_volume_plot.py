"""Detection volume, the dashboard's third signal, plotted: detections per frame per day
and frames logged, reference beside current; the rollup path gives the log's numbers."""

from __future__ import annotations

import datetime as dt

import numpy as np
from PIL import Image

from cvloop.adapters.inference_log import Detection, FrameRecord, write_log
from cvloop.adapters.rollups import build_rollup
from cvloop.adapters.storage import LocalStorage
from cvloop.stages.monitor import Windows
from cvloop.stages.reports import plot_volume, volume_by_day

REF0, CUR0 = dt.date(2026, 10, 5), dt.date(2026, 10, 19)
BOX = Detection("forklift", 0.8, 0.5, 0.5, 0.1, 0.1)


def _day(store, day: dt.date, per_cam: dict[str, tuple[int, int]]) -> None:
    """``per_cam``: camera -> (frames, detections in each frame)."""
    t0 = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    write_log(store, [
        FrameRecord(t0 + dt.timedelta(seconds=30 * i), cam, f"f/{cam}/{day}/{i}.jpg", "1", 4.0,
                    [BOX] * k)
        for cam, (n, k) in per_cam.items() for i in range(n)
    ])  # fmt: skip


def test_volume_per_camera_and_day_from_the_log_and_from_the_rollup_agree(tmp_path):
    store = LocalStorage(tmp_path / "store")
    days = [REF0 + dt.timedelta(days=i) for i in range(3)]
    for i, d in enumerate(days):
        _day(store, d, {"dock-1": (10 + i, 2), "gate-7": (4, i)})
    from_log = volume_by_day(store, days)
    assert from_log["dock-1"] == {d: (10 + i, 2 * (10 + i)) for i, d in enumerate(days)}
    assert from_log["gate-7"] == {d: (4, 4 * i) for i, d in enumerate(days)}
    for d in days[:2]:  # the monitor's rollup path made two of the three days
        build_rollup(store, d)
    assert volume_by_day(store, days) == from_log
    assert volume_by_day(store, [REF0 - dt.timedelta(days=1)]) == {}


def test_the_volume_plot_shows_both_windows(tmp_path):
    store = LocalStorage(tmp_path / "store")
    for i in range(7):
        _day(store, REF0 + dt.timedelta(days=i), {"dock-1": (12, 2), "gate-7": (6, 1)})
        # gate-7 goes blind in the current week; dock-1 stops sending on its last two days
        _day(store, CUR0 + dt.timedelta(days=i), {"dock-1": (12 if i < 5 else 0, 2),
                                                   "gate-7": (6, 0)})  # fmt: skip
    w = Windows(
        *(dt.datetime.combine(d, dt.time(), tzinfo=dt.UTC).isoformat()
          for d in (REF0, REF0 + dt.timedelta(days=7), CUR0, CUR0 + dt.timedelta(days=7)))
    )  # fmt: skip
    name = plot_volume(store, w, tmp_path)
    assert name == "detection-volume.png"
    img = Image.open(tmp_path / name)
    assert img.format == "PNG" and img.size[0] > 600 and img.size[1] > 300
    pixels = np.asarray(img.convert("L"))
    assert pixels.std() > 10  # drawn, not blank

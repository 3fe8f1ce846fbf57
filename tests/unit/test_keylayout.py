"""A team's bucket as it is: the frame store's key layout as a template, and collection
reading frames wherever the layout says they are, with the time from the key, the EXIF or
the object."""

from __future__ import annotations

import datetime as dt
import io
import os

import cv2
import numpy as np
import pytest

from cvloop.adapters.storage import LocalStorage
from cvloop.config.params import load_params, with_overrides
from cvloop.core.errors import CvloopError
from cvloop.core.keylayout import KeyTemplate, check_layout
from cvloop.stages.collect import FrameLayout, collect
from tests.conftest import REPO

DAY = dt.date(2026, 10, 5)
T0 = int(dt.datetime(2026, 10, 5, 14, 30, tzinfo=dt.UTC).timestamp() * 1000)


def test_the_default_template_is_cvloops_own_layout():
    t = KeyTemplate("frames/{camera}/{date}/{ts_ms}.{ext}")
    p = t.parse(f"frames/cam-01/2026-10-05/{T0}.jpg")
    assert (p.camera, p.day, p.ts_ms) == ("cam-01", DAY, T0)
    assert t.parse("frames/cam-01/2026-10-05/notes.txt") is None
    assert t.prefix("cam-01", DAY) == "frames/cam-01/2026-10-05/" and t.prefix() == "frames/"
    assert t.lists_by_day() and t.format("cam-01", T0) == f"frames/cam-01/2026-10-05/{T0}.jpg"


def test_other_layouts_parse_camera_day_and_time():
    t = KeyTemplate("site-a/{camera}/{ts_s}.{ext}")
    p = t.parse(f"site-a/dock_3/{T0 // 1000}.PNG")
    assert (p.camera, p.day, p.ts_ms) == ("dock_3", DAY, T0)
    assert not t.lists_by_day() and t.prefix("dock_3", DAY) == "site-a/dock_3/"
    named = KeyTemplate("{camera}/{date}/{name}.{ext}")
    p = named.parse("gate-2/2026-10-05/IMG_0042.jpeg")
    assert (p.camera, p.day, p.ts_ms) == ("gate-2", DAY, None)
    assert named.parse("gate-2/2026-13-45/IMG_0042.jpeg") is None  # not a date


@pytest.mark.parametrize(
    ("images", "timestamp", "message"),
    [
        ("frames/{date}/{ts_ms}.jpg", "key", "needs {camera}"),
        ("frames/{camera}/{when}.jpg", "key", "unknown fields ['when']"),
        ("{camera}/{date}/{name}.{ext}", "key", "has no {ts_ms} or {ts_s}"),
        ("{camera}/{name}.{ext}", "sometimes", "is not one of"),
    ],
)
def test_a_layout_that_cannot_say_camera_or_time_is_refused(images, timestamp, message):
    with pytest.raises(CvloopError, match=message.replace("[", r"\[").replace("{", r"\{")):
        check_layout(images, "videos/{camera}/{ts_ms}.{ext}", timestamp)
    with pytest.raises(Exception, match="frames"):
        with_overrides(load_params(REPO / "params.yaml"),
                       {"frames": {"images": images, "timestamp": timestamp}})  # fmt: skip


def _jpeg(seed: int, exif_time: str | None = None, offset: str | None = None) -> bytes:
    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), (64, 48))
    data = cv2.imencode(".jpg", img)[1].tobytes()
    if exif_time is None:
        return data
    from PIL import Image

    exif = Image.Exif()
    ifd = exif.get_ifd(0x8769)
    ifd[0x9003] = exif_time
    if offset:
        ifd[0x9011] = offset
    out = io.BytesIO()
    Image.open(io.BytesIO(data)).save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def test_collection_reads_a_bucket_by_camera_and_day_with_exif_times(tmp_path):
    store = LocalStorage(tmp_path / "bucket")
    store.put_bytes("gate-2/2026-10-05/IMG_0001.jpg", _jpeg(1, "2026:10:05 16:30:00", "+02:00"))
    store.put_bytes("gate-2/2026-10-05/IMG_0002.JPG", _jpeg(2, "2026:10:05 14:31:00"))
    store.put_bytes("gate-2/2026-10-05/IMG_0003.jpg", _jpeg(3))  # no EXIF time
    store.put_bytes("gate-2/2026-10-05/readme.txt", b"hello")
    store.put_bytes("gate-2/2026-10-07/IMG_0009.jpg", _jpeg(9, "2026:10:07 09:00:00"))  # later
    layout = FrameLayout("{camera}/{date}/{name}.{ext}", "{camera}/{date}/{name}.{ext}", "exif")
    rep = collect(store, DAY + dt.timedelta(days=1), 1, near_dup_bits=-1, layout=layout)
    got = {c.key.rsplit("/", 1)[1]: (c.camera, c.ts_ms) for c in rep.collected}
    assert got == {"IMG_0001.jpg": ("gate-2", T0), "IMG_0002.JPG": ("gate-2", T0 + 60_000)}
    reasons = {q.key.rsplit("/", 1)[1]: q.reason for q in rep.quarantined}
    assert reasons["IMG_0003.jpg"].startswith("no capture time: no DateTimeOriginal")
    assert reasons["readme.txt"] == "not an image file (expected .jpg/.jpeg/.png)"


def test_collection_with_seconds_in_the_key_or_the_objects_time(tmp_path):
    store = LocalStorage(tmp_path / "bucket")
    store.put_bytes(f"site-a/dock_3/{T0 // 1000}.jpg", _jpeg(1))
    store.put_bytes(f"site-a/dock_3/{T0 // 1000 - 86400 * 3}.jpg", _jpeg(2))  # out of window
    store.put_bytes("site-a/dock_3/snapshot.jpg", _jpeg(3))  # does not fit the layout
    keyed = FrameLayout("site-a/{camera}/{ts_s}.{ext}", "site-a/{camera}/{ts_s}.{ext}", "key")
    rep = collect(store, DAY + dt.timedelta(days=1), 1, near_dup_bits=-1, layout=keyed)
    assert [(c.camera, c.ts_ms) for c in rep.collected] == [("dock_3", T0)]
    assert [q.reason for q in rep.quarantined] == [
        "the key does not fit the layout frames.images 'site-a/{camera}/{ts_s}.{ext}'"
    ]
    # the object's last-modified time
    obj = LocalStorage(tmp_path / "objects")
    obj.put_bytes("cams/north/a.jpg", _jpeg(4))
    os.utime(obj.root / "cams/north/a.jpg", (T0 / 1000, T0 / 1000))
    by_time = FrameLayout("cams/{camera}/{name}.{ext}", "cams/{camera}/{name}.{ext}", "object")
    rep = collect(obj, DAY + dt.timedelta(days=1), 1, near_dup_bits=-1, layout=by_time)
    assert [(c.key, c.camera, c.ts_ms) for c in rep.collected] == [
        ("cams/north/a.jpg", "north", T0)
    ]


def test_a_clip_that_does_not_fit_the_video_layout_is_reported_once(tmp_path):
    store = LocalStorage(tmp_path / "store")
    store.put_bytes(f"frames/cam-01/2026-10-05/{T0}.jpg", _jpeg(1))
    store.put_bytes("videos/cam-01/2026-10-05/clip.mp4", b"\x00" * 32)  # no time in its name
    store.put_bytes("videos/cam-01/2026-10-05/notes.txt", b"hello")
    rep = collect(store, DAY + dt.timedelta(days=1), 1, near_dup_bits=-1)
    assert [c.key.rsplit("/", 1)[1] for c in rep.collected] == [f"{T0}.jpg"]
    assert {q.key.rsplit("/", 1)[1]: q.reason for q in rep.quarantined} == {
        "clip.mp4": "the key does not fit the layout frames.videos "
        "'videos/{camera}/{date}/{ts_ms}.{ext}'",
    }

"""Collect (runbook step 1): bad frames are quarantined with the reason, near-duplicates
dropped, videos sampled at the collect fps by seeking."""

from __future__ import annotations

import datetime as dt

from cvloop.adapters.frame_keys import VIDEO_KEY_SEP, read_frame
from cvloop.adapters.storage import LocalStorage
from cvloop.sim.fleet.generate import FleetConfig, generate_fleet
from cvloop.stages.collect import collect

DAY = dt.date(2026, 10, 5)


def _store(tmp_path, video_seconds=0.0):
    cfg = FleetConfig(
        seed=1, cameras=("cam-01", "cam-02"), bursts_per_day=4, frames_per_burst=3, image_size=128
    )
    generate_fleet(
        cfg, DAY, 2, str(tmp_path / "s"), str(tmp_path / "t"), video_seconds=video_seconds
    )
    return LocalStorage(tmp_path / "s")


def test_bad_frames_are_quarantined_and_the_run_continues(tmp_path):
    store = _store(tmp_path)
    good = store.keys("frames/cam-01/2026-10-05/")[0]
    data = store.get_bytes(good)
    store.put_bytes("frames/cam-01/2026-10-05/1759622400001.jpg", data[: len(data) // 2])
    store.put_bytes("frames/cam-01/2026-10-05/1759622400002.jpg", b"not an image at all")
    store.put_bytes("frames/cam-01/2026-10-05/notes.txt", b"hello")
    rep = collect(store, DAY + dt.timedelta(days=2), 2)
    reasons = {q.key.rsplit("/", 1)[1]: q.reason for q in rep.quarantined}
    assert reasons == {
        "1759622400001.jpg": "truncated JPEG (no end-of-image marker)",
        "1759622400002.jpg": "unreadable: not a decodable image",
        "notes.txt": "not an image file (expected .jpg/.jpeg/.png)",
    }
    assert len(rep.collected) > 0


def png_declaring(width: int, height: int) -> bytes:
    """A few hundred bytes of PNG whose header declares ``width`` x ``height`` (RGB): what a
    decompression bomb looks like before anything decodes it."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 4096, 9)) + chunk(b"IEND", b""))  # fmt: skip


def test_an_image_declaring_too_many_pixels_is_refused_from_its_header(tmp_path):
    import resource

    import pytest

    from cvloop.adapters.detector import decode_jpeg
    from cvloop.core.errors import CvloopError

    store = _store(tmp_path)
    store.put_bytes("frames/cam-01/2026-10-05/1759622400003.png", png_declaring(30000, 30000))
    store.put_bytes("frames/cam-01/2026-10-05/1759622400004.png", png_declaring(10000, 6000))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB, the peak so far
    rep = collect(store, DAY + dt.timedelta(days=2), 2)
    with pytest.raises(CvloopError, match="above the 50 MP cvloop decodes"):
        decode_jpeg(png_declaring(10000, 6000))
    peak_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    reasons = {q.key.rsplit("/", 1)[1]: q.reason for q in rep.quarantined}
    assert "30000 x 30000 pixels (900 MP), above the 50 MP" in reasons["1759622400003.png"]
    assert "10000 x 6000 pixels (60 MP), above the 50 MP" in reasons["1759622400004.png"]
    assert "CVLOOP_MAX_PIXELS" in reasons["1759622400004.png"]  # the fix is named
    assert len(rep.collected) > 0  # the rest went on
    # decoding either would need 2.7 GB / 180 MB: nothing near that was allocated
    assert peak_growth_mb < 100, peak_growth_mb


def test_one_odd_object_is_quarantined_and_the_collection_goes_on(tmp_path):
    store = _store(tmp_path)
    good = store.keys("frames/cam-01/2026-10-05/")[0]
    data = store.get_bytes(good)
    root = tmp_path / "s" / "frames"
    # a camera folder with a backslash (a Windows path copied in): no store call can name it
    (root / "cam\\03" / "2026-10-05").mkdir(parents=True)
    (root / "cam\\03" / "2026-10-05" / "1759622400005.jpg").write_bytes(data)
    # an epoch-ms name out of range (year 3 million): a bad name, not a time
    store.put_bytes("frames/cam-01/2026-10-05/9999999999999999.jpg", data)
    rep = collect(store, DAY + dt.timedelta(days=2), 2)
    reasons = {q.key: q.reason for q in rep.quarantined}
    assert "contains a backslash" in reasons["frames/cam\\03/2026-10-05/1759622400005.jpg"]
    assert reasons["frames/cam-01/2026-10-05/9999999999999999.jpg"] == (
        "the time in the key (9999999999999999) is not a capture time (before 1970 or after 2200)"
    )
    assert {c.camera for c in rep.collected} == {"cam-01", "cam-02"}  # the rest went on
    assert len(rep.collected) + rep.near_duplicates == 2 * 2 * 4 * 3


def test_the_declared_size_is_read_from_the_header_as_pillow_reads_it():
    import io

    import numpy as np
    from PIL import Image

    from cvloop.adapters.detector import _declared_size

    rng = np.random.default_rng(3)
    for w, h in ((1, 1), (17, 33), (640, 360), (1920, 1080)):
        img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        exif = Image.Exif()
        exif[0x0110] = "cam-01"  # an APP1 segment before the frame header
        for kw in ({"format": "PNG"}, {"format": "JPEG"},
                   {"format": "JPEG", "progressive": True}, {"format": "JPEG", "exif": exif}):  # fmt: skip
            buf = io.BytesIO()
            img.save(buf, **kw)
            assert _declared_size(buf.getvalue()) == (w, h), (w, h, kw)
    assert _declared_size(b"GIF89a....") is None  # another format: Pillow reads it


def test_burst_near_duplicates_are_dropped(tmp_path):
    store = _store(tmp_path)
    rep = collect(store, DAY + dt.timedelta(days=2), 2, near_dup_bits=4)
    total = len(store.keys("frames/"))
    assert total == 2 * 2 * 4 * 3
    assert rep.near_duplicates > 0
    assert len(rep.collected) + rep.near_duplicates == total
    assert len({c.sha256 for c in rep.collected}) == len(rep.collected)
    # with no tolerance, only byte-identical... nothing is dropped
    assert collect(store, DAY + dt.timedelta(days=2), 2, near_dup_bits=-1).near_duplicates == 0


def test_window_is_the_days_before_end(tmp_path):
    store = _store(tmp_path)
    only_first = collect(store, DAY + dt.timedelta(days=1), 1, near_dup_bits=-1)
    assert {c.key.split("/")[2] for c in only_first.collected} == {"2026-10-05"}


def test_videos_are_sampled_at_the_collect_fps(tmp_path):
    store = _store(tmp_path, video_seconds=3)
    rep = collect(store, DAY + dt.timedelta(days=1), 1, video_fps=1.0, near_dup_bits=-1)
    samples = [c for c in rep.collected if c.source == "video"]
    assert rep.video_samples == 2 * 3  # 2 cameras x 3 seconds at 1 fps
    assert len(samples) == 6
    assert {int(c.key.split(VIDEO_KEY_SEP)[1]) for c in samples} == {0, 1000, 2000}
    jpeg = read_frame(store, samples[1].key)
    assert jpeg[:2] == b"\xff\xd8"

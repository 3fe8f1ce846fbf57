"""Versioning reviewed frames holds one decoded frame at a time, not the run's.

A run's frames decoded at once were gigabytes at camera resolution (600 frames of 1920x1080
are 3.7 GB of pixels). Measured with tracemalloc (numpy reports its buffers to it): reading
the reviewed frames and writing them into a dataset folder peaks at a few frames' worth.
"""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from cvloop.adapters.datasets import add_frames, read_manifest
from cvloop.adapters.storage import LocalStorage
from cvloop.core.errors import CvloopError
from cvloop.core.frames import content_hash, dhash
from cvloop.stages.versioning import ReviewedFrames

W, H, N = 1280, 720, 16
FRAME_BYTES = W * H * 3  # one decoded frame


def _store(tmp_path):
    import io

    store = LocalStorage(tmp_path / "store")
    rng = np.random.default_rng(0)
    rows, shas = [], []
    for i in range(N):
        px = np.zeros((H, W, 3), np.uint8)
        px[:, : W // 2] = rng.integers(0, 255, 3)  # a flat frame: small as a JPEG
        buf = io.BytesIO()
        Image.fromarray(px).save(buf, "JPEG", quality=90)
        data = buf.getvalue()
        key = f"frames/cam-01/2026-10-01/{1_790_000_000_000 + i}.jpg"
        store.put_bytes(key, data)
        sha = content_hash(data)
        shas.append(sha)
        rows.append({"sha256": sha, "key": key, "image_key": key, "camera": "cam-01",
                     "ts_ms": 1_790_000_000_000 + i, "why": ["edge"], "slice_tags": [],
                     "final": [{"label": "a", "cx": 0.5, "cy": 0.5, "w": 0.1, "h": 0.1}],
                     "edits": {}})  # fmt: skip
    store.put_text("runs/x/reviewed.jsonl", "\n".join(json.dumps(r) for r in rows))
    return store, shas


def test_reading_and_writing_a_run_peaks_at_a_few_frames_not_all(tmp_path):
    store, shas = _store(tmp_path)
    tracemalloc.start()
    try:
        frames = ReviewedFrames.read(store, "runs/x/reviewed.jsonl", shas)
        added, _ = add_frames(tmp_path / "ds", (frames.new_frame(s, "train") for s in shas),
                              ["a"], "dataset-v2", 1)  # fmt: skip
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert added == N
    # all frames decoded at once would be N frames (16 x 2.8 MB); one at a time is ~1
    assert peak < 3 * FRAME_BYTES, f"peak {peak / 1e6:.1f} MB for {N} frames of {W}x{H}"
    entries = {e.sha256: e for e in read_manifest(tmp_path / "ds")}
    assert set(entries) == set(shas)
    from cvloop.adapters.detector import decode_jpeg

    first = store.get_bytes(frames.rows[shas[0]]["image_key"])
    assert entries[shas[0]].dhash == f"{dhash(decode_jpeg(first)):016x}"


def test_a_frame_changed_in_the_store_after_review_is_refused_by_name(tmp_path):
    store, shas = _store(tmp_path)
    frames = ReviewedFrames.read(store, "runs/x/reviewed.jsonl", shas)
    key = frames.rows[shas[3]]["image_key"]
    store.put_bytes(key, store.get_bytes(frames.rows[shas[4]]["image_key"]))
    with pytest.raises(CvloopError) as info:
        list(frames.new_frame(s, "train") for s in shas)
    assert key in info.value.message and "changed in the store" in info.value.message

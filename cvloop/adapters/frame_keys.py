"""The frame store's key layout — the contract every reader and writer of frames relies on::

    frames/<camera>/<YYYY-MM-DD>/<epoch_ms>.jpg      one JPEG per captured frame
    videos/<camera>/<YYYY-MM-DD>/<epoch_ms>.mp4      optional short clips (start time in the name)
    fleet/cameras.json                                the camera registry (name, group)

A frame sampled from a video is named ``<video key>#t=<offset ms>``. The synthetic fleet
writes this layout; collection, serving and the camera registry read it."""

from __future__ import annotations

import tempfile
from pathlib import Path

from cvloop.adapters.storage import Storage

FRAMES_PREFIX = "frames"


VIDEOS_PREFIX = "videos"


CAMERAS_KEY = "fleet/cameras.json"


VIDEO_KEY_SEP = "#t="


def read_frame(store: Storage, key: str) -> bytes:
    """JPEG bytes of a collected frame (an image key, or a sampled video frame)."""
    if VIDEO_KEY_SEP not in key:
        return store.get_bytes(key)
    import cv2

    video, offset = key.split(VIDEO_KEY_SEP)
    with tempfile.TemporaryDirectory() as tmp:
        local = store.local_path(video) or store.get_file(video, Path(tmp) / "clip.mp4")
        cap = cv2.VideoCapture(str(local))
        cap.set(cv2.CAP_PROP_POS_MSEC, int(offset))
        ok, frame = cap.read()
        cap.release()
    if not ok:
        raise ValueError(f"cannot read {key}")
    return cv2.imencode(".jpg", frame)[1].tobytes()

"""The frame store's key layout — the contract every reader and writer of frames relies on::

    frames/<camera>/<YYYY-MM-DD>/<epoch_ms>.jpg      one JPEG per captured frame
    videos/<camera>/<YYYY-MM-DD>/<epoch_ms>.mp4      optional short clips (start time in the name)
    fleet/cameras.json                                the camera registry (name, group)

The synthetic fleet writes it; collection, serving and the camera registry read it."""

from __future__ import annotations

FRAMES_PREFIX = "frames"


VIDEOS_PREFIX = "videos"


CAMERAS_KEY = "fleet/cameras.json"

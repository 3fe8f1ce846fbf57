"""``cvloop bench video``: sampling 1 fps (and 0.2 fps) from a 10-minute 30 fps clip.

Cases ``video.sample_<fps>fps_10min.seconds``: cvloop's collector (seek to each sample
time; the decoder starts from the keyframe before it) vs decoding every frame and keeping
one per 1/fps seconds (baseline). The gain grows with the gap between samples: at 1 fps
on a 30 fps clip with a 12-frame GOP each sample still decodes from its keyframe.
The clip is a 256x256 mp4 (OpenCV's mp4v, as the synthetic fleet writes) of a moving
scene. ``--quick``: a 2-minute clip.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cvloop.app.bench import Case, timed

FPS = 30.0
SIZE = 256


def _write_clip(path: Path, seconds: int) -> int:
    import cv2

    rng = np.random.default_rng(3)
    base = rng.integers(0, 255, size=(SIZE * 2, SIZE * 2, 3), dtype=np.uint8)
    base = cv2.GaussianBlur(base, (31, 31), 0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (SIZE, SIZE))
    n = int(seconds * FPS)
    for i in range(n):
        x = int(SIZE / 2 + SIZE / 2 * np.sin(i / 90))
        y = int(SIZE / 2 + SIZE / 2 * np.cos(i / 70))
        frame = base[y : y + SIZE, x : x + SIZE].copy()
        cv2.rectangle(frame, (i % SIZE, 40), (i % SIZE + 30, 80), (0, 0, 255), -1)
        writer.write(frame)
    writer.release()
    return n


def _decode_all(path: Path, fps: float) -> int:
    """Baseline: read every frame, keep one per 1/fps seconds."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    native = cap.get(cv2.CAP_PROP_FPS) or FPS
    every = max(1, int(round(native / fps)))
    kept = i = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if i % every == 0:
            cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            kept += 1
        i += 1
    cap.release()
    return kept


def _sample(path: Path, fps: float) -> int:
    from cvloop.stages.collect import sample_video

    return sum(1 for _ in sample_video(path, fps))


def run(quick: bool = False) -> Iterator[Case]:
    seconds = 120 if quick else 600
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        _write_clip(clip, seconds)
        for fps in (1.0, 0.2):
            t_ours, n_ours = timed(lambda fps=fps: _sample(clip, fps), repeat=2)
            t_base, n_base = timed(lambda fps=fps: _decode_all(clip, fps), repeat=2)
            if n_ours != n_base:
                raise RuntimeError(f"sampled {n_ours} frames, the baseline kept {n_base}")
            yield Case(
                f"video.sample_{fps:g}fps_{seconds // 60}min.seconds",
                round(t_ours, 3),
                "s",
                f"decode all {int(seconds * FPS)} frames, keep {fps:g} fps ({n_base} frames)",
                round(t_base, 3),
            )

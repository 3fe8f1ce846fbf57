"""Runbook step 2: prefilter with the current champion, then select within a budget.

**Prefilter** (event-driven sampling, seeds/001): run the champion (ONNX Runtime, batched,
streaming: a batch of frames in memory at a time) over the collected frames and keep

* every **edge case**: max confidence below ``low_confidence`` (uncertain), above
  ``high_confidence`` (suspiciously sure), more than ``many_detections`` detections;
* every frame of a **drift slice** (a drift-flagged camera, or a detection of a drift-flagged
  class; a camera where a class new to the schema is expected counts as one);
* a share of the rest: ``ordinary_share`` of the frames with only confident detections
  (seed 001's ~1 %) and ``empty_share`` of those with none (a missed object looks empty),
  drawn by a hash of the frame key, so a re-run keeps the same frames;
* at most ``fps_per_camera`` frames per second per camera (the runbook's "1 fps").

**Select** (active learning): score = uncertainty × slice importance, where uncertainty is
the mean of ``1 - |2c - 1|`` over a frame's detections (1 at c = 0.5; 0.5 for an empty
frame) and importance is ``drift_slice_weight`` for frames of drift-flagged cameras or
classes (from the triggering event), else 1. The top scores fill the budget less an
exploration share, under per-class and per-camera caps; the exploration share is drawn at
random (seeded) from the rest. Every selected frame records why.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from cvloop.core import slices

if TYPE_CHECKING:
    from cvloop.config.params import SelectParams


@dataclass
class Scored:
    """A frame after the champion looked at it."""

    key: str
    camera: str
    ts_ms: int
    n_det: int
    max_conf: float
    uncertainty: float
    labels: list[str]
    reasons: list[str]
    detections: list[dict] = field(default_factory=list)  # label, conf, cx, cy, w, h


def uncertainty_of(confs: np.ndarray) -> float:
    if len(confs) == 0:
        return 0.5
    return float(np.mean(1.0 - np.abs(2.0 * confs - 1.0)))


def edge_reasons(confs: np.ndarray, low: float, high: float, many: int) -> list[str]:
    reasons = []
    if len(confs) == 0:
        return ["edge:empty"]
    if confs.max() < low:
        reasons.append("edge:low_confidence")
    if confs.max() > high:
        reasons.append("edge:high_confidence")
    if len(confs) > many:
        reasons.append("edge:many_detections")
    return reasons


def sampled(key: str, share: float, salt: str) -> bool:
    """Whether ``key`` falls in a deterministic ``share`` of all keys (hash of the key)."""
    import hashlib

    if share >= 1.0:
        return True
    h = int.from_bytes(hashlib.sha256(f"{salt}|{key}".encode()).digest()[:8], "big")
    return h < share * 2.0**64


#: what the prefilter made of a frame (the selection report's columns)
EVENT_KINDS = ("edge", "drift", "ordinary_kept", "empty_kept", "dropped")
#: a camera's counts: frames in, each kind, the pool the shares drew from, and what the fps
#: cap and the selection kept (:func:`cvloop.stages.prefilter.run_prefilter`)
COUNTS = ("in", *EVENT_KINDS, "in_empty", "in_ordinary", "survivors", "selected")


def event_kind(s: Scored, drift_cameras: set[str], drift_classes: set[str],
               ordinary_share: float, empty_share: float) -> str:  # fmt: skip
    """``edge`` / ``drift`` (always kept), ``ordinary_kept`` / ``empty_kept`` (in the
    sampled share) or ``dropped``."""
    if any(r.startswith("edge:") and r != "edge:empty" for r in s.reasons):
        return "edge"
    if s.camera in drift_cameras or any(c in drift_classes for c in s.labels):
        return "drift"
    if s.n_det == 0:
        return "empty_kept" if sampled(s.key, empty_share, "empty") else "dropped"
    return "ordinary_kept" if sampled(s.key, ordinary_share, "ordinary") else "dropped"


def keep_events(
    scored: Iterable[Scored],
    *,
    ordinary_share: float,
    empty_share: float,
    drift_cameras: set[str] = frozenset(),  # type: ignore[assignment]
    drift_classes: set[str] = frozenset(),  # type: ignore[assignment]
    counts: dict[str, dict[str, int]] | None = None,
) -> Iterator[Scored]:
    """Event-driven sampling (module docstring); ``counts`` (camera -> kind -> frames, with
    ``in``) is filled as the frames go by."""
    for s in scored:
        kind = event_kind(s, drift_cameras, drift_classes, ordinary_share, empty_share)
        if counts is not None:
            c = counts.setdefault(s.camera, dict.fromkeys(COUNTS, 0))
            c["in"] += 1
            c[kind] += 1
            if kind not in ("edge", "drift"):  # the pool the shares sample from
                c["in_empty" if s.n_det == 0 else "in_ordinary"] += 1
        if kind == "ordinary_kept":
            s.reasons = [*s.reasons, "sampled:ordinary"]
        elif kind == "empty_kept":
            s.reasons = [*s.reasons, "sampled:empty"]
        if kind != "dropped":
            yield s


def cap_fps(frames: Iterable[Scored], fps: float) -> list[Scored]:
    """At most ``fps`` frames per second per camera (the most uncertain of close frames)."""
    gap_ms = 1000.0 / fps
    by_cam: dict[str, list[Scored]] = {}
    for f in frames:
        by_cam.setdefault(f.camera, []).append(f)
    out = []
    for cam_frames in by_cam.values():
        cam_frames.sort(key=lambda f: f.ts_ms)
        last_ts = None
        for f in cam_frames:
            if last_ts is None or f.ts_ms - last_ts >= gap_ms:
                out.append(f)
                last_ts = f.ts_ms
            elif f.uncertainty > out[-1].uncertainty:
                out[-1] = f  # same second: keep the more informative frame
    return out


@dataclass
class Selected:
    key: str
    camera: str
    ts_ms: int
    score: float
    why: list[str]
    labels: list[str]
    detections: list[dict]


def select(
    frames: list[Scored],
    sel: SelectParams,
    *,
    drift_cameras: set[str],
    drift_classes: set[str],
) -> list[Selected]:
    """Active-learning selection within ``sel.budget`` (``params.yaml``'s ``select``
    section: ``drift_slice_weight``, ``per_class_cap``, ``per_camera_cap``,
    ``exploration_share``, ``seed``); deterministic for a seed."""
    budget, per_class_cap, per_camera_cap = sel.budget, sel.per_class_cap, sel.per_camera_cap

    def importance(f: Scored) -> tuple[float, list[str]]:
        why = []
        if f.camera in drift_cameras:
            why.append(str(slices.camera(f.camera)))
        why += [str(slices.drift_class(c)) for c in f.labels if c in drift_classes]
        return (sel.drift_slice_weight if why else 1.0), why

    scored = []
    for f in frames:
        w, why = importance(f)
        scored.append((f.uncertainty * w, f, why))
    scored.sort(key=lambda t: (-t[0], t[1].key))
    n_explore = int(round(budget * sel.exploration_share))
    n_top = budget - n_explore
    per_cam: dict[str, int] = {}
    per_cls: dict[str, int] = {}
    chosen: list[Selected] = []
    rest = []
    for score, f, why in scored:
        ok = (
            len(chosen) < n_top
            and per_cam.get(f.camera, 0) < per_camera_cap
            and all(per_cls.get(c, 0) < per_class_cap for c in f.labels)
        )
        if not ok:
            rest.append((score, f, why))
            continue
        per_cam[f.camera] = per_cam.get(f.camera, 0) + 1
        for c in f.labels:
            per_cls[c] = per_cls.get(c, 0) + 1
        chosen.append(
            Selected(
                f.key,
                f.camera,
                f.ts_ms,
                round(score, 4),
                [
                    f"uncertainty {f.uncertainty:.2f}",
                    *why,
                    *[r for r in f.reasons if r.startswith("edge:")],
                ],
                f.labels,
                f.detections,
            )
        )
    rng = np.random.default_rng(sel.seed)
    room = min(budget - len(chosen), len(rest))
    if room > 0:
        for i in sorted(rng.choice(len(rest), size=room, replace=False)):
            score, f, why = rest[int(i)]
            chosen.append(
                Selected(
                    f.key,
                    f.camera,
                    f.ts_ms,
                    round(score, 4),
                    ["exploration (random)", *why],
                    f.labels,
                    f.detections,
                )
            )
    return chosen

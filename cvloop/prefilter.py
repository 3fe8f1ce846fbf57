"""Runbook step 2: prefilter with the current champion, then select within a budget.

**Prefilter** (event-driven sampling, seeds/001): run the champion (ONNX Runtime, batched,
streaming: a batch of frames in memory at a time) over the collected frames and keep

* frames with detections, and the edge cases: max confidence below ``low_confidence``
  (uncertain), above ``high_confidence`` (suspiciously sure), more than
  ``many_detections`` detections, or none at all (``keep_empty``: maybe missed);
* at most ``fps_per_camera`` frames per second per camera (the runbook's "1 fps").

**Select** (active learning): score = uncertainty × slice importance, where uncertainty is
the mean of ``1 - |2c - 1|`` over a frame's detections (1 at c = 0.5; 0.5 for an empty
frame) and importance is ``drift_slice_weight`` for frames of drift-flagged cameras or
classes (from the triggering event), else 1. The top scores fill the budget less an
exploration share, under per-class and per-camera caps; the exploration share is drawn at
random (seeded) from the rest. Every selected frame records why.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np

from cvloop.detector import OnnxDetector, decode_jpeg


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


def score_frames(
    frames: Iterable[tuple[str, str, int, bytes]],
    detector: OnnxDetector,
    *,
    conf: float,
    low: float,
    high: float,
    many: int,
    batch_size: int,
    on_error: Callable[[str, str], None] | None = None,
) -> Iterator[Scored]:
    """Run the detector over ``(key, camera, ts_ms, jpeg)`` frames, ``batch_size`` at a time."""
    batch: list[tuple[str, str, int, np.ndarray]] = []

    def flush() -> Iterator[Scored]:
        dets = detector.predict([b[3] for b in batch], conf=conf)
        for (key, cam, ts, _), d in zip(batch, dets, strict=True):
            confs = d.scores.astype(np.float64)
            labels = [detector.class_names[int(c)] for c in d.classes]
            reasons = (["detections"] if len(confs) else []) + edge_reasons(confs, low, high, many)
            boxes = d.cxcywh()
            yield Scored(
                key,
                cam,
                ts,
                len(confs),
                float(confs.max()) if len(confs) else 0.0,
                uncertainty_of(confs),
                sorted(set(labels)),
                reasons,
                [
                    {
                        "label": lab,
                        "conf": round(float(c), 4),
                        "cx": round(float(b[0]), 5),
                        "cy": round(float(b[1]), 5),
                        "w": round(float(b[2]), 5),
                        "h": round(float(b[3]), 5),
                    }
                    for lab, c, b in zip(labels, confs, boxes, strict=True)
                ],
            )
        batch.clear()

    for key, cam, ts, jpeg in frames:
        try:
            batch.append((key, cam, ts, decode_jpeg(jpeg)))
        except Exception as exc:  # an unreadable frame is reported, never fatal
            if on_error:
                on_error(key, str(exc))
            continue
        if len(batch) >= batch_size:
            yield from flush()
    if batch:
        yield from flush()


def keep_events(scored: Iterable[Scored], *, keep_empty: bool) -> Iterator[Scored]:
    """Event-driven sampling: frames with detections, and the edge cases."""
    for s in scored:
        if s.n_det or (keep_empty and "edge:empty" in s.reasons):
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
    *,
    budget: int,
    drift_cameras: set[str],
    drift_classes: set[str],
    drift_weight: float,
    per_class_cap: int,
    per_camera_cap: int,
    exploration_share: float,
    seed: int,
) -> list[Selected]:
    """Active-learning selection within ``budget``; deterministic for a seed."""

    def importance(f: Scored) -> tuple[float, list[str]]:
        why = []
        if f.camera in drift_cameras:
            why.append(f"drift:camera {f.camera}")
        why += [f"drift:class {c}" for c in f.labels if c in drift_classes]
        return (drift_weight if why else 1.0), why

    scored = []
    for f in frames:
        w, why = importance(f)
        scored.append((f.uncertainty * w, f, why))
    scored.sort(key=lambda t: (-t[0], t[1].key))
    n_explore = int(round(budget * exploration_share))
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
    rng = np.random.default_rng(seed)
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


def run_prefilter(
    frames: Iterable[tuple[str, str, int, bytes]],
    detector: OnnxDetector,
    pf,
    sel,
    drift_cameras: set[str],
    drift_classes: set[str],
    on_error: Callable[[str, str], None] | None = None,
) -> tuple[list[Scored], list[Selected]]:
    """The whole step with ``params.yaml``'s ``prefilter`` (``pf``) and ``select`` (``sel``)
    sections: score, keep events, cap the fps, select. Returns (events, selected)."""
    scored = score_frames(
        frames,
        detector,
        conf=pf.conf,
        low=pf.low_confidence,
        high=pf.high_confidence,
        many=pf.many_detections,
        batch_size=pf.batch_size,
        on_error=on_error,
    )
    events = cap_fps(keep_events(scored, keep_empty=pf.keep_empty), pf.fps_per_camera)
    chosen = select(
        events,
        budget=sel.budget,
        drift_cameras=drift_cameras,
        drift_classes=drift_classes,
        drift_weight=sel.drift_slice_weight,
        per_class_cap=sel.per_class_cap,
        per_camera_cap=sel.per_camera_cap,
        exploration_share=sel.exploration_share,
        seed=sel.seed,
    )
    return events, chosen


def to_parquet(rows: list) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([asdict(r) for r in rows]) if rows else pa.table({})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()

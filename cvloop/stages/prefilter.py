"""Runbook step 2, the pipeline: the champion scores every collected frame (batched ONNX
Runtime), then the pure rules of ``cvloop/core/selection.py`` keep the edge cases, cap the
rate and select within the budget."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict

import numpy as np

from cvloop.adapters.detector import OnnxDetector, decode_jpeg
from cvloop.core.selection import (
    Scored,
    Selected,
    cap_fps,
    edge_reasons,
    keep_events,
    select,
    uncertainty_of,
)


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

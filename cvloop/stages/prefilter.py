"""Runbook step 2, the pipeline: the champion scores every collected frame (batched ONNX
Runtime), then the pure rules of ``cvloop/core/selection.py`` keep the edge cases, cap the
rate and select within the budget."""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from cvloop.adapters.detector import OnnxDetector, decode_jpeg
from cvloop.config.params import PrefilterParams, SelectParams
from cvloop.core import slices
from cvloop.core.selection import (
    EVENT_KINDS,
    Scored,
    Selected,
    cap_fps,
    edge_reasons,
    keep_events,
    select,
    uncertainty_of,
)

if TYPE_CHECKING:
    from cvloop.context import Context
    from cvloop.stages.model import ChampionRef


def score_frames(
    frames: Iterable[tuple[str, str, int, bytes]],
    detector: OnnxDetector,
    pf: PrefilterParams,
    on_error: Callable[[str, str], None] | None = None,
) -> Iterator[Scored]:
    """Run the detector over ``(key, camera, ts_ms, jpeg)`` frames, ``pf.batch_size`` at a
    time (``params.yaml``'s ``prefilter`` section: ``conf``, ``low_confidence``,
    ``high_confidence``, ``many_detections``)."""
    conf, low, high = pf.conf, pf.low_confidence, pf.high_confidence
    many, batch_size = pf.many_detections, pf.batch_size
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
    pf: PrefilterParams,
    sel: SelectParams,
    drift_cameras: set[str],
    drift_classes: set[str],
    on_error: Callable[[str, str], None] | None = None,
    counts: dict[str, dict[str, int]] | None = None,
) -> tuple[list[Scored], list[Selected]]:
    """The whole step with ``params.yaml``'s ``prefilter`` (``pf``) and ``select`` (``sel``)
    sections: score, keep events, cap the fps, select. Returns (events, selected);
    ``counts`` gets, per camera, frames in, edge cases, drift-slice frames, ordinary and empty
    frames kept, dropped, survivors at the fps cap and selected."""
    scored = score_frames(frames, detector, pf, on_error)
    kept = keep_events(scored, ordinary_share=pf.ordinary_share, empty_share=pf.empty_share,
                       drift_cameras=drift_cameras, drift_classes=drift_classes,
                       counts=counts)  # fmt: skip
    events = cap_fps(kept, pf.fps_per_camera)
    chosen = select(events, sel, drift_cameras=drift_cameras, drift_classes=drift_classes)
    if counts is not None:  # every survivor came through keep_events: its camera is counted
        for key, rows in (("survivors", events), ("selected", chosen)):
            for r in rows:
                counts[r.camera][key] += 1
    return events, chosen


def to_parquet(rows: list) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([asdict(r) for r in rows]) if rows else pa.table({})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


@dataclass(frozen=True)
class Selection:
    selected_key: str
    summary: dict


def prefilter_and_select(
    ctx: Context,
    run_id: str,
    collected_key: str,
    champion: ChampionRef,
    drift_cameras: list[str],
    drift_classes: list[str],
    pf: PrefilterParams,
    sel: SelectParams,
    route_cameras: list[str] | None = None,
    seed_keys: list[str] | None = None,
    route_classes: list[str] | None = None,
) -> Selection:
    """Score with the champion (ONNX Runtime, batched, streaming), keep events, cap the fps,
    select within the budget; writes ``selected.parquet`` under the run's folder.

    A class the champion does not know yet (``route_classes``, added to the schema) is
    routed to review: the operator's ``seed_keys`` are selected on top of the budget, and the
    frames of ``route_cameras`` (where it appears) weigh like drift frames, so their
    low-confidence detections rank first."""
    from cvloop.adapters.detector import OnnxDetector
    from cvloop.adapters.frame_keys import read_frame
    from cvloop.adapters.parquet import read_parquet

    store = ctx.store
    from cvloop.stages.data import labeled_hashes

    collected = read_parquet(store.get_bytes(collected_key)).to_pylist()
    known = labeled_hashes(ctx)
    already = sum(r["sha256"] in known for r in collected)
    collected = [r for r in collected if r["sha256"] not in known]
    detector = OnnxDetector(champion.onnx, champion.classes, champion.imgsz)
    errors: list[tuple[str, str]] = []

    def frames():
        for row in collected:
            try:
                yield row["key"], row["camera"], row["ts_ms"], read_frame(store, row["key"])
            except Exception as exc:  # vanished or unreadable since collection
                errors.append((row["key"], str(exc)))

    routed = set(route_cameras or ()) - set(drift_cameras)
    per_camera: dict[str, dict[str, int]] = {}
    events, chosen = run_prefilter(
        frames(),
        detector,
        pf,
        sel,
        set(drift_cameras) | routed,
        set(drift_classes),
        on_error=lambda k, e: errors.append((k, e)),
        counts=per_camera,
    )
    note = f"new class {', '.join(route_classes or [])}: likely here"
    for s in chosen:  # a routed camera is not a drift slice: say why it was weighed
        s.why = [f"{note} ({slices.SliceTag.parse(w).name})"
                 if w in {str(slices.camera(c)) for c in routed}
                 else w for w in s.why]  # fmt: skip
    from cvloop.core.keylayout import KeyTemplate

    layout = KeyTemplate(ctx.params.frames.images)
    chosen += _seed_frames(store, seed_keys or [], known, {c.key for c in chosen}, detector,
                           pf, route_classes or [], errors, layout)  # fmt: skip
    base = collected_key.rsplit("/", 1)[0]
    store.put_bytes(f"{base}/selected.parquet", to_parquet(chosen))
    why = Counter(w.split(" ")[0] if not slices.is_drift(w) else w for s in chosen for w in s.why)
    cols = ("in", *EVENT_KINDS, "survivors", "selected")
    table = {cam: {k: c[k] for k in cols} for cam, c in sorted(per_camera.items())}
    summary = {
        "collected": len(collected) + already,
        "already_labeled": already,
        "scored": sum(c["in"] for c in table.values()),
        "edge_cases": sum(c["edge"] + c["drift"] for c in table.values()),
        "ordinary_kept": sum(c["ordinary_kept"] for c in table.values()),
        "empty_kept": sum(c["empty_kept"] for c in table.values()),
        "dropped": sum(c["dropped"] for c in table.values()),
        "after_prefilter": len(events),
        "selected": len(chosen),
        "per_camera": table,
        "shares": {"ordinary": pf.ordinary_share, "empty": pf.empty_share},
        "unreadable": len(errors),
        "drift_frames_selected": sum(any(slices.is_drift(w) for w in s.why) for s in chosen),
        "why": dict(why.most_common()),
    }
    store.put_text(f"{base}/selection-summary.json", json.dumps(summary, indent=2))
    return Selection(f"{base}/selected.parquet", summary)


def _seed_frames(store, keys, known, taken, detector, pf, classes, errors, layout) -> list:
    """The operator's example frames of new classes, scored by the champion (for the
    pre-annotation of the classes it knows), unless already labeled or selected."""
    import time

    from cvloop.adapters.frame_keys import read_frame
    from cvloop.core.frames import content_hash
    from cvloop.core.selection import Selected
    from cvloop.stages.prefilter import score_frames

    todo = []
    for key in keys:
        if key in taken:
            continue
        try:
            data = read_frame(store, key)
        except Exception as exc:
            errors.append((key, str(exc)))
            continue
        if content_hash(data) not in known:
            # a production frame (a key in the frame layout) keeps its camera
            parsed = layout.parse(key)
            camera = parsed.camera if parsed is not None else "operator-seed"
            todo.append((key, camera, int(time.time() * 1000), data))
    scored = score_frames(iter(todo), detector, pf)
    why = f"seed: operator's example of {', '.join(classes) or 'a new class'}"
    return [Selected(f.key, f.camera, f.ts_ms, 1.0, [why], f.labels, f.detections) for f in scored]


def selection_line(s: dict) -> str:
    """One line of the selection: frames in -> edge cases -> sampled -> survivors -> selected."""
    if "edge_cases" not in s:  # a summary written before the event-driven prefilter
        return f"{s['collected']} collected -> {s['after_prefilter']} after the prefilter -> {s['selected']} selected"
    return (f"{s['scored']} scored -> {s['edge_cases']} edge cases + {s['ordinary_kept']} "
            f"ordinary ({s['shares']['ordinary']:.0%}) + {s['empty_kept']} empty "
            f"({s['shares']['empty']:.0%}) kept, {s['dropped']} dropped -> "
            f"{s['after_prefilter']} survivors at <= fps -> {s['selected']} selected")  # fmt: skip


def selection_markdown(s: dict) -> str:
    """The retrain's selection report (the Prefect artifact ``retrain-selection``)."""
    lines = [
        "# Retrain: prefilter and selection",
        "",
        f"{selection_line(s)} ({s['already_labeled']} of {s['collected']} collected were "
        f"labeled before; {s.get('unreadable', 0)} unreadable; "
        f"{s['drift_frames_selected']} drift frames selected)",
        "",
    ]
    if s.get("per_camera"):
        lines += [
            "| camera | frames in | edge cases | drift slice | ordinary kept | empty kept "
            "| dropped | survivors (<= fps) | selected |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for cam, c in s["per_camera"].items():
            lines.append(f"| {cam} | {c['in']} | {c['edge']} | {c['drift']} | "
                         f"{c['ordinary_kept']} | {c['empty_kept']} | {c['dropped']} | "
                         f"{c['survivors']} | {c['selected']} |")  # fmt: skip
        lines.append("")
    lines += ["| why selected | frames |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in s["why"].items()]
    return "\n".join(lines) + "\n"

"""Prefilter + selection stage (runbook step 2): the champion looks at every collected
frame; edge cases and detections survive at <= 1 fps per camera; active learning picks
the frames to label within the budget."""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass

from prefect import task

from cvloop.config.params import PrefilterParams, SelectParams
from cvloop.stages.prefilter import run_prefilter, to_parquet


@dataclass(frozen=True)
class Selection:
    selected_key: str
    summary: dict


def prefilter_and_select(
    run_id: str,
    collected_key: str,
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
    import pyarrow.parquet as pq

    from cvloop.adapters.detector import OnnxDetector
    from cvloop.adapters.storage import open_storage
    from cvloop.stages.collect import read_frame
    from registry.models import CHAMPION, ModelRegistry

    store = open_storage()
    from tasks.data import labeled_hashes

    collected = pq.read_table(io.BytesIO(store.get_bytes(collected_key))).to_pylist()
    known = labeled_hashes()
    already = sum(r["sha256"] in known for r in collected)
    collected = [r for r in collected if r["sha256"] not in known]
    model = ModelRegistry.from_settings().fetch_alias(CHAMPION)
    detector = OnnxDetector(model.onnx, model.classes, model.imgsz)
    errors: list[tuple[str, str]] = []

    def frames():
        for row in collected:
            try:
                yield row["key"], row["camera"], row["ts_ms"], read_frame(store, row["key"])
            except Exception as exc:  # vanished or unreadable since collection
                errors.append((row["key"], str(exc)))

    routed = set(route_cameras or ()) - set(drift_cameras)
    events, chosen = run_prefilter(
        frames(),
        detector,
        pf,
        sel,
        set(drift_cameras) | routed,
        set(drift_classes),
        on_error=lambda k, e: errors.append((k, e)),
    )
    note = f"new class {', '.join(route_classes or [])}: likely here"
    for s in chosen:  # a routed camera is not a drift slice: say why it was weighed
        s.why = [f"{note} ({w.split(' ', 1)[1]})" if w in {f"drift:camera {c}" for c in routed}
                 else w for w in s.why]  # fmt: skip
    chosen += _seed_frames(store, seed_keys or [], known, {c.key for c in chosen}, detector,
                           pf, route_classes or [], errors)  # fmt: skip
    base = collected_key.rsplit("/", 1)[0]
    store.put_bytes(f"{base}/selected.parquet", to_parquet(chosen))
    why = Counter(
        w.split(" ")[0] if not w.startswith("drift:") else w for s in chosen for w in s.why
    )
    summary = {
        "collected": len(collected) + already,
        "already_labeled": already,
        "after_prefilter": len(events),
        "selected": len(chosen),
        "unreadable": len(errors),
        "drift_frames_selected": sum(any(w.startswith("drift:") for w in s.why) for s in chosen),
        "why": dict(why.most_common()),
    }
    store.put_text(f"{base}/selection-summary.json", json.dumps(summary, indent=2))
    return Selection(f"{base}/selected.parquet", summary)


def _seed_frames(store, keys, known, taken, detector, pf, classes, errors) -> list:
    """The operator's example frames of new classes, scored by the champion (for the
    pre-annotation of the classes it knows), unless already labeled or selected."""
    import time

    from cvloop.core.frames import content_hash
    from cvloop.core.selection import Selected
    from cvloop.stages.collect import read_frame
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
            # a production frame (frames/<camera>/...) keeps its camera
            parts = key.split("/")
            camera = parts[1] if parts[0] == "frames" and len(parts) > 2 else "operator-seed"
            todo.append((key, camera, int(time.time() * 1000), data))
    scored = score_frames(iter(todo), detector, conf=pf.conf, low=pf.low_confidence,
                          high=pf.high_confidence, many=pf.many_detections,
                          batch_size=pf.batch_size)  # fmt: skip
    why = f"seed: operator's example of {', '.join(classes) or 'a new class'}"
    return [Selected(f.key, f.camera, f.ts_ms, 1.0, [why], f.labels, f.detections) for f in scored]


@task(name="publish_selection_report")
def publish_selection_report(selection: Selection) -> str:
    from prefect.artifacts import create_markdown_artifact

    s = selection.summary
    lines = [
        "# Retrain: prefilter and selection",
        "",
        "| collected | already labeled | after prefilter (events, <= fps per camera) "
        "| selected | drift frames |",
        "|---|---|---|---|---|",
        f"| {s['collected']} | {s['already_labeled']} | {s['after_prefilter']} | "
        f"{s['selected']} | {s['drift_frames_selected']} |",
        "",
        "| why selected | frames |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in s["why"].items()]
    md = "\n".join(lines) + "\n"
    create_markdown_artifact(markdown=md, key="retrain-selection", description="selection")
    return md


prefilter_and_select_task = task(
    prefilter_and_select, name="prefilter_and_select", persist_result=True
)

"""Collect stage (runbook step 1): frames of the last N days, quarantined and deduplicated."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass

from prefect import task

from cvloop.stages.collect import collect, to_parquet


@dataclass(frozen=True)
class CollectedBatch:
    """Where the collection was written, and its counts (tasks pass keys, not frames)."""

    frames_key: str
    quarantine_key: str
    summary: dict


def collect_frames(
    run_id: str,
    end: str | None,
    days: int,
    cameras: list[str] | None,
    video_fps: float,
    near_dup_bits: int,
    base: str | None = None,
) -> CollectedBatch:
    """Collect, then write ``collected.parquet`` and ``quarantine.json`` under the run's
    folder in the store (a re-run of the same flow run rewrites the same keys)."""
    from cvloop.adapters.storage import open_storage

    store = open_storage()
    end_day = dt.date.fromisoformat(end[:10]) if end else dt.date.today()
    rep = collect(
        store, end_day, days, cameras=cameras, video_fps=video_fps, near_dup_bits=near_dup_bits
    )
    base = base or f"runs/retrain/{run_id}"
    store.put_bytes(f"{base}/collected.parquet", to_parquet(rep.collected))
    store.put_text(
        f"{base}/quarantine.json", json.dumps([asdict(q) for q in rep.quarantined], indent=2)
    )
    return CollectedBatch(f"{base}/collected.parquet", f"{base}/quarantine.json", rep.summary())


@task(name="publish_collect_report")
def publish_collect_report(batch: CollectedBatch, drift_slices: list[dict]) -> str:
    from prefect.artifacts import create_markdown_artifact

    from cvloop.adapters.storage import open_storage

    quarantined = json.loads(open_storage().get_text(batch.quarantine_key))
    lines = [
        "# Retrain: collected frames",
        "",
        "| collected | near-duplicates dropped | video samples | quarantined |",
        "|---|---|---|---|",
        f"| {batch.summary['collected']} | {batch.summary['near_duplicates_dropped']} | "
        f"{batch.summary['video_samples']} | {batch.summary['quarantined']} |",
        "",
        "Drift slices from the triggering event: "
        + (", ".join(f"{s.get('kind')} {s.get('name')}" for s in drift_slices) or "none"),
    ]
    if quarantined:
        lines += ["", "## Quarantine", "", "| frame | reason |", "|---|---|"]
        lines += [f"| {q['key']} | {q['reason']} |" for q in quarantined[:200]]
    md = "\n".join(lines) + "\n"
    create_markdown_artifact(markdown=md, key="retrain-collect", description="collected frames")
    return md


collect_frames_task = task(collect_frames, name="collect_frames", persist_result=True)

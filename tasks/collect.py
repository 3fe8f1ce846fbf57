"""Collect stage (runbook step 1): frames of the last N days, quarantined and deduplicated."""

from __future__ import annotations

import json

from prefect import task

from cvloop.stages.collect import CollectedBatch, collect_frames
from tasks import stage_task


@task(name="publish_collect_report")
def publish_collect_report(batch: CollectedBatch, drift_slices: list[dict]) -> str:
    from prefect.artifacts import create_markdown_artifact

    from cvloop.context import current

    quarantined = json.loads(current().store.get_text(batch.quarantine_key))
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


collect_frames_task = stage_task(collect_frames, name="collect_frames", persist_result=True)

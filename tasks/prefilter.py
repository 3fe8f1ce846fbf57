"""Prefilter + selection stage (runbook step 2): the champion looks at every collected
frame; edge cases and detections survive at <= 1 fps per camera; active learning picks
the frames to label within the budget."""

from __future__ import annotations

from prefect import task

from cvloop.stages.prefilter import Selection, prefilter_and_select
from tasks import stage_task


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


prefilter_and_select_task = stage_task(
    prefilter_and_select, name="prefilter_and_select", persist_result=True
)

"""Prefilter + selection stage (runbook step 2): the champion looks at every collected
frame; edge cases, drift-slice frames and a sampled share of the rest survive at <= 1 fps
per camera; active learning picks the frames to label within the budget."""

from __future__ import annotations

from prefect import task

from cvloop.stages.prefilter import Selection, prefilter_and_select, selection_markdown
from tasks import stage_task


@task(name="publish_selection_report")
def publish_selection_report(selection: Selection) -> str:
    from prefect.artifacts import create_markdown_artifact

    md = selection_markdown(selection.summary)
    create_markdown_artifact(markdown=md, key="retrain-selection", description="selection")
    return md


prefilter_and_select_task = stage_task(
    prefilter_and_select, name="prefilter_and_select", persist_result=True
)

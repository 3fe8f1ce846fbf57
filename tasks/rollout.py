"""Rollout stage (runbook step 8): one tick as three tasks the Prefect UI shows apart —
measure the canary, decide, apply — and the report operators read."""

from __future__ import annotations

from prefect import task

from cvloop.stages.canary_report import canary_report
from cvloop.stages.rollout import (
    apply_tick,
    decide_tick,
    measure_tick,
    start_if_passed,
    start_rollout,
    write_initial_manifest,
)
from cvloop.stages.status import production_status, status_text
from tasks import stage_task

start_rollout_task = stage_task(start_rollout, name="start_rollout")
start_if_passed_task = stage_task(start_if_passed, name="start_rollout_if_passed")
measure_canary_task = stage_task(measure_tick, name="measure_canary")
decide_task = stage_task(decide_tick, name="decide")
apply_decision_task = stage_task(apply_tick, name="apply_decision")


@task(name="publish_rollout_status")
def publish_rollout_status(result: dict) -> str:
    """Artifact ``rollout-status`` (the tick's decision, what decided it, the per-class
    pairing, every check, then ``cvloop status``); ``rollout-breach`` / ``rollout-stopped``
    too when the tick rolled back or stopped."""
    from prefect.artifacts import create_markdown_artifact

    from cvloop.context import current

    status = status_text(production_status(current()))
    md = canary_report(result) + "\n```\n" + status + "\n```\n"
    create_markdown_artifact(markdown=md, key="rollout-status", description=result["status"])
    if result["status"] in ("rollback", "stop"):
        create_markdown_artifact(
            markdown=md, key="rollout-breach" if result["status"] == "rollback" else "rollout-stopped",
            description=result.get("reason", ""),
        )  # fmt: skip
    return md


write_initial_manifest_task = stage_task(write_initial_manifest, name="write_initial_manifest")

"""Rollout: 10 % → 50 % → (ML lead's approval) → 100 %, canary checks at every stage.

``rollout`` is one tick: it reads the rollout manifest, computes the canary (challenger vs
champion over the same period of the inference log) and holds, advances, asks for approval,
promotes, rolls back on a breach, or stops when the approval deadline has passed. The
deployment ``rollout/tick`` runs it every few minutes, so no process waits for hours and a
crash loses nothing: the manifest (written atomically) and the MLflow aliases are the state,
and every tick reconciles them first. ``cvloop rollout start`` (or a retrain whose candidate
passed every gate) begins a rollout; ``cvloop approve`` / ``cvloop rollback`` are the
people's levers; ``cvloop status`` says what serves.
"""

from __future__ import annotations

from prefect import flow, task

from cvloop.stages.canary import canary_report
from cvloop.stages.rollout import rollout_tick, start_rollout
from cvloop.stages.status import production_status, status_text


@task(name="rollout_tick")
def rollout_tick_task(who: str) -> dict:
    return rollout_tick(who)


@task(name="publish_rollout_status")
def publish_rollout_status(result: dict) -> str:
    from prefect.artifacts import create_markdown_artifact

    md = canary_report(result) + "\n```\n" + status_text(production_status()) + "\n```\n"
    create_markdown_artifact(markdown=md, key="rollout-status", description=result["status"])
    if result["status"] in ("rollback", "stop"):
        create_markdown_artifact(
            markdown=md, key="rollout-breach" if result["status"] == "rollback" else "rollout-stopped",
            description=result.get("reason", ""),
        )  # fmt: skip
    return md


@flow(name="rollout", log_prints=True)
def rollout(start_version: str | None = None, who: str = "cvloop rollout") -> dict:
    """One tick of the rollout in progress (or start one with ``start_version``)."""
    if start_version:
        start = task(start_rollout, name="start_rollout")(start_version, who)
        print(f"rollout of v{start_version}: {start['status']}")
    result = rollout_tick_task(who)
    print(
        f"rollout: {result['status']}" + (f": {result['reason']}" if result.get("reason") else "")
    )
    publish_rollout_status(result)
    return {k: v for k, v in result.items() if k != "manifest"}


if __name__ == "__main__":
    rollout()

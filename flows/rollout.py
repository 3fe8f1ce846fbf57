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

from prefect import flow

from flows.hooks import publish_failure
from tasks.rollout import (
    apply_decision_task,
    decide_task,
    measure_canary_task,
    publish_rollout_status,
    start_rollout_task,
)


@flow(name="rollout", log_prints=True, on_failure=[publish_failure])
def rollout(start_version: str | None = None, who: str = "cvloop rollout") -> dict:
    """One tick of the rollout in progress (or start one with ``start_version``)."""
    if start_version:
        started = start_rollout_task(start_version, who)
        print(f"rollout of v{start_version}: {started['status']}")
    # 1. the canary: guards from the inference log, quality from both models on the same frames
    measured = measure_canary_task(who)
    # 2. the decision: canary, served hours, the ML lead's approval
    decision = decide_task(measured)
    # 3. act on it: hold, advance, ask for approval, promote, roll back or stop
    result = apply_decision_task(measured, decision, who)
    print(
        f"rollout: {result['status']}" + (f": {result['reason']}" if result.get("reason") else "")
    )
    publish_rollout_status(result)
    return {k: v for k, v in result.items() if k != "manifest"}


if __name__ == "__main__":
    rollout()

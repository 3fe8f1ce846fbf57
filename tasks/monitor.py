"""Monitor stage: drift signals, holdout trend, triggers, reports, the drift event.

The stage functions are ``cvloop/stages/monitor.py``; the drift event is emitted here.
"""

from __future__ import annotations

from prefect import task

from cvloop.core.triggers import (
    TriggerResult,
    drift_slices,
)
from cvloop.stages.monitor import (
    Windows,
    check_holdout,
    compute_drift_signals,
    count_new_labels,
    evaluate_triggers,
    latest_flagged,
    resolve_windows,
)
from registry.names import DRIFT_EVENT
from tasks import stage_task


def emit_drift_event(
    w: Windows, results: list[TriggerResult], model_name: str, champion: str | None
) -> str | None:
    """Emit ``cvloop.drift.detected`` when a rule fired; returns the event id."""
    fired = [r.rule for r in results if r.fired]
    if not fired:
        return None
    from prefect.events import emit_event

    slices = drift_slices(results)
    payload = {
        "triggers": fired,
        "drift_slices": slices,
        "cameras": sorted({s["name"] for s in slices if s["kind"] == "camera"}),
        "classes": sorted({s["name"] for s in slices if s["kind"] == "class"}),
        "window": {"start": w.cur_start, "end": w.cur_end},
        "champion": champion,
    }
    event = emit_event(
        event=DRIFT_EVENT,
        resource={
            "prefect.resource.id": f"cvloop.model.{model_name}",
            "prefect.resource.name": model_name,
        },
        payload=payload,
    )
    from prefect.runtime import flow_run

    from cvloop.context import current
    from cvloop.stages.notify import flow_run_url, tell

    ctx = current()
    where = ", ".join(f"{s['kind']} {s['name']}" for s in slices) or "the whole fleet"
    links = {"the weekly check (Prefect)": flow_run_url(ctx, flow_run.get_id()) or "",
             "runbook": "runbooks/retraining.md"}  # fmt: skip
    tell(ctx, "trigger_fired", f"{w.cur_start}..{w.cur_end}",
         f"{model_name}: {', '.join(fired)} fired for {w.cur_start}..{w.cur_end}",
         f"Drift on {where}; the retrain starts (deployment retrain/on-drift) and will ask "
         "for reviewers.", {k: v for k, v in links.items() if v},
         roles=("on_call", "ml_lead"))  # fmt: skip
    return str(event.id) if event else None


resolve_windows_task = stage_task(resolve_windows, name="resolve_windows")

compute_drift_signals_task = stage_task(compute_drift_signals, name="compute_drift_signals")

check_holdout_task = stage_task(check_holdout, name="check_holdout")

count_new_labels_task = stage_task(count_new_labels, name="count_new_labels")

evaluate_triggers_task = task(evaluate_triggers, name="evaluate_triggers")

emit_drift_event_task = task(emit_drift_event, name="emit_drift_event")

latest_flagged_task = stage_task(latest_flagged, name="latest_flagged", persist_result=True)

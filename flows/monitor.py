"""Monitor: the weekly drift check that decides whether to retrain.

Drift signals (confidence, object size, detection volume; KS / PSI / Wasserstein; overall,
per class, per camera), the champion's holdout trend in MLflow, the trigger rules, the
operators' report, and — when a rule fires — the ``cvloop.drift.detected`` event that
starts the retrain deployment (automation in prefect.yaml).
"""

from __future__ import annotations

from prefect import flow

from cvloop.context import current
from flows.hooks import publish_failure
from tasks.monitor import (
    check_holdout_task,
    compute_drift_signals_task,
    count_new_labels_task,
    emit_drift_event_task,
    evaluate_triggers_task,
    resolve_windows_task,
)
from tasks.reports import publish_monitor_report_task
from tasks.schema import current_schema_task


@flow(name="monitor", log_prints=True, on_failure=[publish_failure])
def monitor(
    current_end: str | None = None,
    current_days: int | None = None,
    reference_days: int | None = None,
    reference_start: str | None = None,
    emit: bool = True,
) -> list[str]:
    """Run the weekly check; returns the names of the rules that fired."""
    p = current().params
    m = p.monitor
    # 1. the two windows (current: the last week; reference: the week before, or fixed)
    w = resolve_windows_task(
        current_end,
        current_days or m.current_days,
        reference_days or m.reference_days,
        reference_start or (str(m.reference_start) if m.reference_start else None),
    )
    # 2. drift signals per slice (exact when small, daily rollups when large)
    rows = compute_drift_signals_task(w, list(current_schema_task().classes), m)
    # 3. the champion on the holdout, and its weekly trend
    holdout = check_holdout_task(w, p.train.imgsz, p.train.device)
    labels = count_new_labels_task(holdout.days_since_training)
    # 4. the trigger rules
    results = evaluate_triggers_task(rows, holdout, labels, p)
    # 5. the drift event that starts the retrain deployment
    event_id = (
        emit_drift_event_task(w, results, p.registry.model_name, holdout.champion) if emit else None
    )
    # 6. what operators see: report artifact, Evidently dashboard, MLflow metrics
    publish_monitor_report_task(w, rows, holdout, results, event_id)
    fired = [r.rule for r in results if r.fired]
    print(f"triggers fired: {', '.join(fired) or 'none'}")
    return fired


if __name__ == "__main__":
    monitor()

"""What operators see: the drift dashboard (Evidently HTML), histogram plots, and the
markdown artifact of each monitor run."""

from __future__ import annotations

from prefect import task

from cvloop.stages.monitor import (
    HoldoutCheck,
    Windows,
    drifted_table,
    log_monitor_run,
    report_dir,
    trigger_table,
)
from cvloop.stages.reports import build_drift_dashboard


def publish_monitor_report(
    w: Windows, rows: list[dict], holdout: HoldoutCheck, results, event_id: str | None
) -> str:
    from prefect.artifacts import create_link_artifact, create_markdown_artifact

    from cvloop.context import current

    ctx = current()
    out = report_dir(ctx, w)
    files = build_drift_dashboard(ctx, w, rows, out)
    store = ctx.store
    for name in files:  # the dashboard also lives in the store, next to the log it describes
        store.put_file(f"reports/monitor/{w.iso_week}/{name}", out / name)
    run = log_monitor_run(ctx, w, rows, holdout, results, str(out))
    dashboard = run["artifact_url"].format(name="drift-report.html")
    plot = run["artifact_url"].format(name="confidence-histograms.png")
    volume = run["artifact_url"].format(name="detection-volume.png")
    fired = [r.rule for r in results if r.fired]
    status = (
        f"🔴 **retrain triggered** by {', '.join(fired)} (event `{event_id}`)"
        if fired
        else "🟢 no trigger fired"
    )
    holdout_line = (
        f"holdout {holdout.holdout_version}: mAP50-95 {holdout.map50_95:.4f} "
        f"(reference {holdout.reference_map50_95:.4f})"
        if holdout.map50_95 is not None and holdout.reference_map50_95 is not None
        else f"holdout: {holdout.note or 'not evaluated'}"
    )
    from cvloop.adapters.inference_log import quarantined

    lost = quarantined(store, since=w.dates[0], until=w.dates[1])
    lost_line = (
        f"- 🔴 inference log: {len(lost)} part(s) quarantined (read without them): "
        + "; ".join(f"`{r.get('key')}`: {r.get('reason')}" for r in lost[:5])
        if lost
        else "- inference log: every part read"
    )
    md = "\n".join(
        [
            f"# Monitor, week {w.iso_week}: champion v{holdout.champion}",
            "",
            f"current {w.cur_start[:10]} .. {w.cur_end[:10]} vs reference {w.ref_start[:10]} .. "
            f"{w.ref_end[:10]}",
            "",
            status,
            "",
            f"- {holdout_line}",
            lost_line,
            "- owners: "
            + (
                "; ".join(ctx.params.owners.names("on_call", "ml_lead"))
                or "not named (params.yaml owners)"
            ),
            f"- drift dashboard (Evidently): [{dashboard}]({dashboard})",
            f"- MLflow run: [{run['run_url']}]({run['run_url']})",
            "",
            "## Triggers",
            trigger_table(results),
            "",
            "## Most drifted slices",
            drifted_table(rows),
            "",
            f"![confidence histograms]({plot})",
            "",
            f"![detection volume per frame and frames logged, per day]({volume})",
        ]
    )
    create_markdown_artifact(
        markdown=md, key="monitor-report", description=f"drift check, week {w.iso_week}"
    )
    create_link_artifact(
        link=dashboard,
        link_text="Evidently drift report",
        key="drift-dashboard",
        description="drift dashboard",
    )
    return md


publish_monitor_report_task = task(publish_monitor_report, name="publish_monitor_report")

"""Weekly review: the runbook's two questions, answered from what the week recorded.

1. **Is anything red?** Monitor triggers that fired, canary breaches and stopped rollouts,
   failed or crashed flow runs, candidates the gates rejected.
2. **Did the deployment change, and why?** Every rollout-manifest change of the week (who,
   when, the split, the reason) and the model versions registered.

A markdown artifact ``weekly-review`` in Prefect and a copy in the store
(``reports/weekly/<ISO week>.md``). Deployment ``weekly-review/weekly`` (Mondays).
"""

from __future__ import annotations

import datetime as dt

from prefect import flow, task

from registry.names import CHAMPION_VERSION, GATE, GATE_REASONS, ROLLOUT_STATUS, TRIGGERS_FIRED


@task(name="gather_week")
def gather_week(start: dt.datetime, end: dt.datetime) -> dict:
    from cvloop.adapters.storage import open_storage
    from cvloop.stages.monitor import MONITOR_EXPERIMENT
    from registry.manifest import history
    from registry.models import ModelRegistry

    reg = ModelRegistry.from_settings()
    client = reg.client
    ms = lambda t: int(t.timestamp() * 1000)  # noqa: E731
    monitor = []
    exp = client.get_experiment_by_name(MONITOR_EXPERIMENT)
    if exp:
        for r in client.search_runs(
            [exp.experiment_id],
            f"attributes.start_time >= {ms(start)} and attributes.start_time < {ms(end)}",
            order_by=["attributes.start_time ASC"],
        ):
            monitor.append(
                {
                    "run": r.info.run_name,
                    "champion": r.data.tags.get(CHAMPION_VERSION),
                    "fired": r.data.tags.get(TRIGGERS_FIRED, "none"),
                    "holdout_map50_95": r.data.metrics.get("holdout.map50_95"),
                }
            )
    versions = []
    for mv in client.search_model_versions(f"name='{reg.name}'"):
        if ms(start) <= int(mv.creation_timestamp) < ms(end):
            t = dict(mv.tags)
            versions.append(
                {
                    "version": str(mv.version),
                    "gate": t.get(GATE, "n/a"),
                    "reasons": t.get(GATE_REASONS, "[]"),
                    "dataset": t.get("cvloop.dataset.version"),
                    "rollout": t.get(ROLLOUT_STATUS, "-"),
                }
            )
    versions.sort(key=lambda v: int(v["version"]))
    changes = [
        {
            "when": h.updated_at,
            "who": h.updated_by,
            "stage": h.stage,
            "split": ", ".join(f"v{a.version} {a.share:g}%" for a in h.allocations),
            "reason": h.reason,
        }
        for h in history(open_storage(), since=start)
        if dt.datetime.fromisoformat(h.updated_at) < end
    ]
    from cvloop.stages.schema import data_changes

    return {
        "monitor": monitor,
        "versions": versions,
        "changes": changes,
        "data": sorted(
            data_changes(start, end) + _camera_changes(start, end), key=lambda r: r["when"]
        ),
    }


def _camera_changes(start, end) -> list[dict]:
    """Cameras registered into a group or region this week (the camera registry)."""
    from cvloop.adapters.cameras import registrations
    from cvloop.adapters.storage import open_storage

    return [
        {"when": r.when, "version": "camera registry",
         "what": f"{r.camera} -> group {r.group}" + (f", region {r.region}" if r.region else ""),
         "who": r.who, "why": r.why}
        for r in registrations(open_storage(), start, end)
    ]  # fmt: skip


@task(name="failed_flow_runs")
def failed_flow_runs(start: dt.datetime, end: dt.datetime) -> list[dict]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                start_time=FlowRunFilterStartTime(after_=start, before_=end),
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.FAILED, StateType.CRASHED])
                ),
            ),
            limit=200,
        )
        names = {}
        out = []
        for r in runs:
            if r.flow_id not in names:
                names[r.flow_id] = client.read_flow(r.flow_id).name
            out.append(
                {
                    "flow": names[r.flow_id],
                    "run": r.name,
                    "id": str(r.id),
                    "state": r.state.name if r.state else "?",
                    "when": r.start_time.isoformat(timespec="seconds") if r.start_time else "",
                    "message": (r.state.message or "")[:200] if r.state else "",
                }
            )
    return sorted(out, key=lambda x: x["when"])


def review_markdown(week: str, data: dict, failed: list[dict]) -> tuple[str, list[str]]:
    """The report and its red items."""
    red = []
    for m in data["monitor"]:
        if m["fired"] not in ("", "none"):
            red.append(f"monitor {m['run']}: triggers fired: {m['fired']}")
    for c in data["changes"]:
        if "rollback" in c["reason"] or "stop" in c["reason"].split(":")[0]:
            red.append(f"rollout {c['when']}: {c['reason']}")
    for f in failed:
        red.append(f"flow run {f['flow']}/{f['run']} {f['state']} at {f['when']}: {f['message']}")
    for v in data["versions"]:
        if v["gate"] == "rejected":
            red.append(f"candidate v{v['version']} rejected by the gates: {v['reasons']}")
    lines = [f"# Weekly review {week}", "", "## Is anything red?", ""]
    lines += [f"- 🔴 {r}" for r in red] or [
        "- 🟢 nothing: no trigger, breach, failed run or rejection"
    ]
    lines += ["", "## Did the deployment change, and why?", ""]
    if data["changes"]:
        lines += ["| when | who | stage | split | why |", "|---|---|---|---|---|"]
        lines += [
            f"| {c['when']} | {c['who']} | {c['stage']} | {c['split']} | {c['reason']} |"
            for c in data["changes"]
        ]
    else:
        lines.append("No change: the same split served all week.")
    lines += ["", "## Did the data change, and why?", ""]
    if data.get("data"):
        lines += ["| when | version | what | who | why |", "|---|---|---|---|---|"]
        lines += [
            f"| {d['when']} | {d['version']} | {d['what']} | {d['who']} | {d['why'] or '-'} |"
            for d in data["data"]
        ]
    else:
        lines.append("No new schema, dataset or holdout version.")
    lines += ["", "## Model versions registered", ""]
    if data["versions"]:
        lines += ["| version | dataset | gate | rollout |", "|---|---|---|---|"]
        lines += [
            f"| v{v['version']} | {v['dataset']} | {v['gate']} | {v['rollout']} |"
            for v in data["versions"]
        ]
    else:
        lines.append("None.")
    lines += ["", "## Weekly drift checks", ""]
    if data["monitor"]:
        lines += ["| check | champion | holdout mAP50-95 | triggers |", "|---|---|---|---|"]
        for m in data["monitor"]:
            h = m["holdout_map50_95"]
            lines.append(
                f"| {m['run']} | v{m['champion']} | {'—' if h is None else f'{h:.4f}'} | "
                f"{m['fired']} |"
            )
    else:
        lines.append(
            "🔴 no drift check ran this week (is `monitor/weekly` scheduled and the worker up?)"
        )
        red.append("no drift check ran this week")
    return "\n".join(lines) + "\n", red


@flow(name="weekly-review", log_prints=True)
def weekly_review(end: str | None = None, days: int = 7) -> dict:
    """The week before ``end`` (default now): anything red? did the deployment change?"""
    from prefect.artifacts import create_markdown_artifact

    from cvloop.adapters.storage import open_storage

    t1 = dt.datetime.fromisoformat(end) if end else dt.datetime.now(dt.UTC)
    t1 = t1 if t1.tzinfo else t1.replace(tzinfo=dt.UTC)
    t0 = t1 - dt.timedelta(days=days)
    week = f"{t0.date()}..{t1.date()}"
    data = gather_week(t0, t1)
    failed = failed_flow_runs(t0, t1)
    md, red = review_markdown(week, data, failed)
    iso = t1.isocalendar()
    open_storage().put_text(f"reports/weekly/{iso.year}-W{iso.week:02d}.md", md)
    create_markdown_artifact(markdown=md, key="weekly-review", description=week)
    print(
        f"weekly review {week}: {len(red)} red item(s); {len(data['changes'])} deployment change(s)"
    )
    return {
        "week": week,
        "red": red,
        "changes": data["changes"],
        "versions": data["versions"],
        "data": data.get("data", []),
        "markdown": md,
    }


if __name__ == "__main__":
    weekly_review()

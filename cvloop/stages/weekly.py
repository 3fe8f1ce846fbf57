"""Weekly review (runbook: "anything red? did the deployment change, why?"): what the week
recorded in MLflow, the rollout history, the data repository and the camera registry, and
the report. The flow run failures come from Prefect (``tasks/weekly.py``)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from registry.names import (
    CHAMPION_VERSION,
    DATASET_VERSION,
    GATE,
    GATE_REASONS,
    ROLLOUT_STATUS,
    TRIGGERS_FIRED,
)

if TYPE_CHECKING:
    from cvloop.context import Context


def gather_week(ctx: Context, start: dt.datetime, end: dt.datetime) -> dict:
    """The week's monitor runs, registered versions, rollout changes and data changes."""
    from cvloop.stages.monitor import monitor_experiment
    from cvloop.stages.schema import data_changes
    from registry.manifest import history

    ms = lambda t: int(t.timestamp() * 1000)  # noqa: E731
    monitor = [
        {
            "run": r.name,
            "champion": r.tags.get(CHAMPION_VERSION),
            "fired": r.tags.get(TRIGGERS_FIRED, "none"),
            "holdout_map50_95": r.metrics.get("holdout.map50_95"),
        }
        for r in ctx.tracker.find_runs(
            monitor_experiment(ctx), started=(start, end), oldest_first=True
        )
    ]
    versions = []
    for mv in ctx.registry.versions():
        if ms(start) <= int(mv.creation_timestamp) < ms(end):
            t = dict(mv.tags)
            versions.append(
                {
                    "version": str(mv.version),
                    "gate": t.get(GATE, "n/a"),
                    "reasons": t.get(GATE_REASONS, "[]"),
                    "dataset": t.get(DATASET_VERSION),
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
        for h in history(ctx.store, since=start)
        if dt.datetime.fromisoformat(h.updated_at) < end
    ]
    from cvloop.stages.open_retrain import open_retrain

    return {
        "owners": ctx.params.owners.names("ml_lead", "on_call", "reviewers"),
        "retrain": open_retrain(ctx),
        "monitor": monitor,
        "versions": versions,
        "changes": changes,
        "slo": slo_of_week(ctx, start, end),
        "quarantined": _quarantined_of_week(ctx, start, end),
        "data": sorted(
            data_changes(ctx, start, end) + _camera_changes(ctx, start, end),
            key=lambda r: r["when"],
        ),
    }


def slo_of_week(ctx: Context, start: dt.datetime, end: dt.datetime) -> list[dict]:
    """Each served version's SLO attainment and error budget used over the week, from the
    inference log, and the fleet's (``version`` = ``all``)."""
    import numpy as np
    import pyarrow.compute as pc

    from cvloop.adapters.inference_log import read_log
    from cvloop.core.slo import slo_report

    log = read_log(ctx.store, start, end, columns=["model_version", "latency_ms", "error"])
    if log.num_rows == 0:
        return []
    versions = log.column("model_version").to_numpy(zero_copy_only=False)
    failed = pc.is_valid(log.column("error")).to_numpy(zero_copy_only=False)
    lat = log.column("latency_ms").to_numpy(zero_copy_only=False).astype(float)
    out = []
    for v in [*sorted(set(versions), key=lambda x: (len(x), x)), "all"]:
        sel = np.ones(len(versions), bool) if v == "all" else versions == v
        r = slo_report(
            lat[sel & ~failed], int(sel.sum()), int((sel & failed).sum()), ctx.params.slo
        )
        out.append({"version": v, "frames": r.frames, "within": r.within,
                    "latency_budget_used": r.latency_budget_used, "error_rate": r.error_rate,
                    "error_budget_used": r.error_budget_used, "met": r.met,
                    "describe": r.describe()})  # fmt: skip
    return out


def _quarantined_of_week(ctx: Context, start: dt.datetime, end: dt.datetime) -> list[dict]:
    """Inference-log parts quarantined this week (of its dates, or found this week)."""
    from cvloop.adapters.inference_log import lost_parts

    s, e = start.date(), (end - dt.timedelta(milliseconds=1)).date()
    return lost_parts(ctx.store, s, e, found_from=s.isoformat(), found_to=e.isoformat() + "~")


def _camera_changes(ctx: Context, start, end) -> list[dict]:
    """Cameras registered into a group or region this week (the camera registry)."""
    from cvloop.adapters.cameras import registrations

    return [
        {"when": r.when, "version": "camera registry",
         "what": f"{r.camera} -> group {r.group}" + (f", region {r.region}" if r.region else ""),
         "who": r.who, "why": r.why}
        for r in registrations(ctx.store, start, end)
    ]  # fmt: skip


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
    for q in data.get("quarantined") or []:
        red.append(f"inference-log part quarantined: {q.get('key')}: {q.get('reason')} "
                   f"(now {q.get('quarantined_as')}; {q.get('fix', '')})")  # fmt: skip
    slo = data.get("slo") or []
    for r in slo:
        if r["version"] == "all" and not r["met"]:
            red.append(f"service level objectives missed this week: {r['describe']}")
    lines = [f"# Weekly review {week}", ""]
    owners = data.get("owners") or []
    lines += [f"Owners: {'; '.join(owners) if owners else 'not named (params.yaml owners)'}", ""]
    lines += ["## Is anything red?", ""]
    lines += [f"- 🔴 {r}" for r in red] or [
        "- 🟢 nothing: no trigger, breach, failed run or rejection"
    ]
    rec = data.get("retrain")
    if rec and rec.get("error"):
        red.append(f"the open-retrain record cannot be read: {rec['error']}")
    elif rec:
        trig = ", ".join((rec.get("trigger") or {}).get("triggers") or ["manual"])
        lines += ["", "## The open retrain", "",
                  f"Flow run {rec['run_id']} since {rec.get('since')} ({trig}). Triggers "
                  "recorded on it (not started again: at most one retrain is open):", ""]  # fmt: skip
        lines += _table(
            ["when", "triggers", "cameras", "classes", "flow run"],
            [[j.get("at"), ", ".join(j.get("triggers") or []), ", ".join(j.get("cameras") or [])
              or "-", ", ".join(j.get("classes") or []) or "-", j.get("run_id")]
             for j in rec.get("joined") or []],
            "None.",
        )  # fmt: skip
    lines += ["", "## Did the deployment change, and why?", ""]
    lines += _table(
        ["when", "who", "stage", "split", "why"],
        [[c["when"], c["who"], c["stage"], c["split"], c["reason"]] for c in data["changes"]],
        "No change: the same split served all week.",
    )
    lines += ["", "## Did the data change, and why?", ""]
    lines += _table(
        ["when", "version", "what", "who", "why"],
        [
            [d["when"], d["version"], d["what"], d["who"], d["why"] or "-"]
            for d in data.get("data") or []
        ],
        "No new schema, dataset or holdout version.",
    )
    lines += ["", "## Service level objectives (the inference log of the week)", ""]
    pct = lambda x: "—" if x is None else f"{x:.1%}"  # noqa: E731
    lines += _table(
        ["version", "frames", "within latency", "latency budget used", "errors",
         "error budget used", "met"],
        [[r["version"] if r["version"] == "all" else f"v{r['version']}", r["frames"],
          pct(r["within"]), pct(r["latency_budget_used"]), pct(r["error_rate"]),
          pct(r["error_budget_used"]), "yes" if r["met"] else "🔴 no"] for r in slo],
        "No frame was served this week.",
    )  # fmt: skip
    lines += ["", "## Model versions registered", ""]
    lines += _table(
        ["version", "dataset", "gate", "rollout"],
        [[f"v{v['version']}", v["dataset"], v["gate"], v["rollout"]] for v in data["versions"]],
        "None.",
    )
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


def _table(header: list[str], rows: list[list], empty: str) -> list[str]:
    """A markdown table, or the ``empty`` sentence when there are no rows."""
    if not rows:
        return [empty]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]


def store_review(ctx: Context, end: dt.datetime, md: str) -> str:
    """A copy of the report in the store: ``reports/weekly/<ISO week>.md``."""
    iso = end.isocalendar()
    key = f"reports/weekly/{iso.year}-W{iso.week:02d}.md"
    ctx.store.put_text(key, md)
    return key

"""What ``cvloop demo`` prints about each step, read back from Prefect and MLflow, and the
pictures it draws."""

from __future__ import annotations

from pathlib import Path

from cvloop.app.demo_steps import _ctx
from cvloop.config.settings import Settings
from registry.names import (
    CANDIDATE_VERSION,
    DATASET_VERSION,
    FLOW_RUN_ID,
    GATE,
    GATE_REASONS,
    HOLDOUT_MAP50_95,
)


def _artifacts(settings: Settings, flow_run_id: str, key: str | None = None) -> list[dict]:
    """The artifacts of one flow run (those with ``key`` only, if given), from the Prefect API."""
    from cvloop.adapters.prefect_rest import PrefectRest

    query: dict = {"flow_run_id": {"any_": [flow_run_id]}}
    if key:
        query["key"] = {"any_": [key]}
    with PrefectRest(settings.prefect_api_url) as api:
        return api.post("/artifacts/filter", json={"artifacts": query})


def _drift_report_url(settings: Settings, monitor_run: str) -> str | None:
    """The Evidently dashboard of the monitor run (an MLflow artifact), from its report."""
    import re

    try:
        arts = _artifacts(settings, monitor_run, "monitor-report")
        urls = re.findall(r"\((http[^)]*drift-report\.html[^)]*)\)", arts[0]["data"])
        return urls[0] if urls else None
    except Exception:
        return None


def _pictures(settings: Settings, retrain_run: dict | None, monitor_run: str) -> list[Path]:
    """The retrain's flow run as a timeline and the monitor's drift histograms, as PNGs in
    ``<home>/pictures`` (the README's pictures are these)."""

    from cvloop.app.pictures import flow_run_picture

    out_dir = settings.home / "pictures"
    made = []
    try:
        if retrain_run is not None:
            made.append(
                flow_run_picture(
                    settings.prefect_api_url, retrain_run["id"], out_dir / "retrain-flow-run.png"
                )
            )
        arts = _artifacts(settings, monitor_run)
        store = _ctx().store
        keys = [
            o.key
            for o in store.list("reports/monitor/")
            if o.key.endswith("confidence-histograms.png")
        ]
        if keys and arts:
            target = out_dir / "drift-confidence.png"
            target.write_bytes(store.get_bytes(sorted(keys)[-1]))
            made.append(target)
    except Exception:  # pictures are a convenience, never a reason to fail the demo
        pass
    return made


def _dataset_lines(settings: Settings, flow_run_id: str) -> list[str]:
    import json

    store = _ctx().store
    base = f"runs/retrain/{flow_run_id}"
    if not store.exists(f"{base}/versions.json"):
        return []
    v = json.loads(store.get_text(f"{base}/versions.json"))
    bad = json.loads(store.get_text(f"{base}/annotation-quarantine.json"))
    lines = [
        f"{v['dataset']['name']}: +{v['added']['train']} train, +{v['added']['val']} val "
        f"(DVC md5 {v['dataset']['dvc_md5']}, git {v['dataset']['git_rev'][:10]})"
    ]
    if v["holdout"]:
        lines.append(f"{v['holdout']['name']}: +{v['added']['holdout']} drift frames")
    lines.append(
        f"quarantined by validation: {len({b['frame'] for b in bad})} frames "
        f"({', '.join(sorted({b['rule'] for b in bad})) or 'none'})"
    )
    return lines


def _report_lines(settings: Settings, flow_run_id: str) -> list[str]:
    """The status line and trigger table of a monitor run's report artifact."""
    arts = _artifacts(settings, flow_run_id, "monitor-report")
    if not arts:
        return ["(no monitor report found)"]
    md = arts[0]["data"].splitlines()
    status = [x for x in md if "trigger" in x.lower() and x.startswith(("🔴", "🟢"))]
    table = [x for x in md if x.startswith("| ") and ("FIRED" in x or "🟢 no" in x)]
    return status + [x.split(" | ")[0].lstrip("| ") + ": " + x.split(" | ")[1] for x in table]


def _candidate_lines(settings: Settings, flow_run_id: str) -> list[str]:
    """The candidate's verdict, from the retrain's MLflow run and the model version."""
    ctx = _ctx()
    p = ctx.params
    runs = ctx.tracker.find_runs(p.registry.experiment, tags={FLOW_RUN_ID: flow_run_id},
                                 max_results=1)  # fmt: skip
    v = runs[0].tags.get(CANDIDATE_VERSION) if runs else None
    if not v:
        return [
            f"no candidate registered: see {settings.prefect_ui_url}/runs/flow-run/{flow_run_id}"
        ]
    t = ctx.registry.get_version(v).tags
    lines = [
        f"candidate v{v} {t.get(GATE)} (holdout mAP50-95 {t.get(HOLDOUT_MAP50_95)}; "
        f"trained on {t.get(DATASET_VERSION)}); report: artifact gate-report, "
        f"MLflow {settings.mlflow_tracking_uri}/#/models/{p.registry.model_name}/versions/{v}"
    ]
    reasons = t.get(GATE_REASONS, "[]")
    if reasons not in ("", "[]"):
        lines.append(f"gate reasons: {reasons}")
    return lines

""" "Which checkpoint is in prod, trained on what?": the traffic split and, for every serving
or aliased version, its lineage, metrics, gates, benchmark, approval and rollout state."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from registry.manifest import read_manifest
from registry.names import (
    ADOPT_ARCHITECTURE,
    ADOPT_ORIGIN,
    ADOPT_SAVED_AT,
    ADOPT_SHA256,
    ADOPT_ULTRALYTICS,
    APPROVED_BY,
    GATE,
    GATE_REASONS,
    HOLDOUT_MAP50,
    HOLDOUT_MAP50_95,
    ROLLOUT_EVIDENCE,
    ROLLOUT_KEPT,
    ROLLOUT_REASON,
    ROLLOUT_STATUS,
    SOURCE,
)

if TYPE_CHECKING:
    from cvloop.context import Context


def production_status(ctx: Context, history: int = 10) -> dict:
    """The traffic split, and for every serving version (and the aliased ones) its lineage,
    metrics, gates, benchmark, approval and rollout state; the last rollout changes."""
    from registry.manifest import history as manifest_history
    from registry.names import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION

    store = ctx.store
    reg = ctx.registry
    m = read_manifest(store)
    aliases = {a: reg.alias_version(a) for a in (CHAMPION, CHALLENGER, PREVIOUS_CHAMPION)}
    serving = {a.version: a.share for a in m.allocations} if m else {}
    if not serving and aliases[CHAMPION]:
        serving = {aliases[CHAMPION]: 100.0}
    versions = list(dict.fromkeys([*serving, *[v for v in aliases.values() if v]]))
    uri = ctx.settings.mlflow_tracking_uri
    rows = []
    for v in versions:
        mv = reg.get_version(v)
        t = dict(mv.tags)
        try:
            run = ctx.tracker.get_run(mv.run_id)
            run_params, exp = dict(run.params), run.experiment_id
            trained = _training_used(run.metrics, run.tags)
        except Exception:
            run_params, exp, trained = {}, "0", {}
        rows.append(
            {
                "version": v,
                "share": serving.get(v, 0.0),
                "aliases": [a for a, x in aliases.items() if x == v],
                "training_run": mv.run_id,
                "run_url": f"{uri}/#/experiments/{exp}/runs/{mv.run_id}",
                "dataset_version": t.get("cvloop.dataset.version"),
                "dataset_dvc_md5": t.get("cvloop.dataset.dvc_md5"),
                "holdout_version": t.get("cvloop.holdout.version"),
                "schema_version": t.get("cvloop.schema.version") or "schema-v1",
                "classes": json.loads(t.get("cvloop.classes", "[]") or "[]"),
                "parent_version": t.get("cvloop.parent_version"),
                "git_commit": t.get("cvloop.git_commit"),
                "params_sha256": t.get("cvloop.params_sha256"),
                "train_params": {k: run_params[k] for k in sorted(run_params)},
                "training": trained,
                "holdout_map50_95": t.get(HOLDOUT_MAP50_95),
                "holdout_map50": t.get(HOLDOUT_MAP50),
                "gate": t.get(GATE, "n/a (baseline)"),
                "gate_reasons": json.loads(t.get(GATE_REASONS, "[]") or "[]"),
                "bench_onnx": json.loads(t.get("cvloop.bench.onnx", "{}") or "{}"),
                "approved_by": t.get(APPROVED_BY),
                "rollout_status": t.get(ROLLOUT_STATUS),
                "rollout_reason": t.get(ROLLOUT_REASON),
                "rollout_evidence": t.get(ROLLOUT_EVIDENCE),
                "rollout_kept_share": json.loads(t.get(ROLLOUT_KEPT, "{}") or "{}"),
                "sha256_pt": t.get("cvloop.sha256.pt"),
                "source": t.get(SOURCE) or "trained by cvloop",
                "adopted": _adopted(t),
                "imgsz": t.get("cvloop.imgsz"),
                "created": mv.creation_timestamp,
            }
        )
    changes = manifest_history(store)[-history:]
    from cvloop.stages.schema import schema_summary

    try:
        data = schema_summary(ctx)
    except Exception as exc:  # the data repository is elsewhere: say so, never fail status
        data = {"error": str(exc).splitlines()[0]}
    from cvloop.stages.open_retrain import open_retrain

    return {
        "data": data,
        "retrain": open_retrain(ctx),
        "frames": _frame_roots(store),
        "manifest": json.loads(m.to_json()) if m else None,
        "aliases": aliases,
        "versions": rows,
        "history": [
            {
                "when": h.updated_at,
                "who": h.updated_by,
                "stage": h.stage,
                "split": {a.version: a.share for a in h.allocations},
                "reason": h.reason,
            }
            for h in reversed(changes)
        ],
    }


def _frame_roots(store) -> dict:
    """Where frames live: the main store and each region's root (regions file)."""
    from cvloop.adapters.regions import RegionalStorage

    regions = store.regions if isinstance(store, RegionalStorage) else {}
    return {"store": store.uri, "regions": {n: r.uri for n, r in regions.items()}}


def _adopted(tags: dict) -> dict | None:
    """Where an adopted champion's file came from (None: a model cvloop trained)."""
    if tags.get(SOURCE) != "adopted":
        return None
    names = (("origin", ADOPT_ORIGIN), ("sha256", ADOPT_SHA256), ("saved_at", ADOPT_SAVED_AT),
             ("architecture", ADOPT_ARCHITECTURE), ("ultralytics", ADOPT_ULTRALYTICS))  # fmt: skip
    return {k: tags.get(tag) for k, tag in names}


def _trained_on(r: dict) -> str:
    schema = f"{r.get('schema_version', 'schema-v1')} ({', '.join(r.get('classes') or [])})"
    a = r.get("adopted")
    if a:  # trained outside cvloop: where the file came from, and nothing invented
        return (f"  trained on   outside cvloop: adopted from {a['origin']} (sha256 "
                f"{str(a['sha256'])[:16]}), {a['architecture']} at imgsz {r.get('imgsz')}, "
                f"ultralytics {a['ultralytics']}, saved {str(a['saved_at'])[:19]}; scored on "
                f"holdout {r['holdout_version']}, {schema}")  # fmt: skip
    return (f"  trained on   {r['dataset_version']} (DVC {str(r['dataset_dvc_md5'])[:16]}), "
            f"holdout {r['holdout_version']}, {schema}, "
            + (f"fine-tuned from v{r['parent_version']}"
               if (r["parent_version"] or "none") != "none" else "trained from scratch"))  # fmt: skip


def status_text(s: dict) -> str:
    """One screen: what serves, trained on what, and the last changes."""
    lines = []
    m = s["manifest"]
    split = ", ".join(f"v{r['version']} {r['share']:g}%" for r in s["versions"] if r["share"])
    lines.append(
        f"PRODUCTION  {split or 'nothing serves'}   stage: {m['stage'] if m else 'stable'}"
    )
    if m:
        lines.append(f"  since {m['updated_at']} by {m['updated_by']}: {m['reason']}")
    d = s.get("data") or {}
    if "schema" in d:
        lines.append(
            f"DATA        {d['schema']} ({', '.join(d['classes'])}; label policy "
            f"v{d['label_policy_version']}; last change: {d['last_change']})  newest "
            f"{d['dataset']}, {d['holdout']}"
        )
    elif d:
        lines.append(f"DATA        unknown: {d.get('error')}")
    lines += _retrain_lines(s.get("retrain"))
    f = s.get("frames") or {}
    if f.get("regions"):
        roots = "; ".join(f"{n}: {u}" for n, u in sorted(f["regions"].items()))
        lines.append(f"FRAMES      {f['store']}; regions {roots}")
    for r in s["versions"]:
        b = r["bench_onnx"]
        lines += [
            "",
            f"v{r['version']}  {r['share']:g}%  [{', '.join(r['aliases']) or 'no alias'}]"
            f"  rollout: {r['rollout_status'] or '-'}  approved by: {r['approved_by'] or '-'}",
            _trained_on(r),
            f"  code         git {str(r['git_commit'])[:12]}  params {str(r['params_sha256'])[:12]}",
            f"  {_training_line(r)}",
            f"  holdout      mAP50-95 {r['holdout_map50_95']}  mAP50 {r['holdout_map50']}"
            f"  gate: {r['gate']}"
            + (f" ({'; '.join(r['gate_reasons'])})" if r["gate_reasons"] else ""),
            f"  serving      ONNX p95 {b.get('p95_ms', '-')} ms, {b.get('throughput_fps', '-')} frames/s"
            f" ({b.get('device', '-')})",
            f"  MLflow run   {r['run_url']}",
        ]
        if r["rollout_reason"]:
            lines.append(f"  last rollout {r['rollout_reason']}")
        if r.get("rollout_evidence"):
            kept = ", ".join(f"{k} {v:.0%}" for k, v in r["rollout_kept_share"].items()
                             if v is not None)  # fmt: skip
            lines.append(f"  canary decided by {r['rollout_evidence']}"
                         + (f" (champion's confident boxes kept: {kept})" if kept else ""))  # fmt: skip
    lines += ["", "ROLLOUT HISTORY (newest first)"]
    for h in s["history"]:
        split = ", ".join(f"v{v} {x:g}%" for v, x in h["split"].items())
        lines.append(f"  {h['when']}  {h['who']:<16} {h['stage']:<11} {split:<18} {h['reason']}")
    return "\n".join(lines)


def _retrain_lines(rec: dict | None) -> list[str]:
    """The open retrain and the triggers recorded on it (at most one is open)."""
    if not rec:
        return []
    if rec.get("error"):
        return [f"RETRAIN     unknown: {rec['error'].splitlines()[0]}"]
    trig = rec.get("trigger") or {}
    out = [f"RETRAIN     open: flow run {rec['run_id']} since {rec.get('since')} "
           f"({', '.join(trig.get('triggers') or ['manual'])})"]  # fmt: skip
    for j in rec.get("joined") or []:
        out.append(f"  + trigger recorded on it {j.get('at')}: {', '.join(j.get('triggers') or [])}"
                   f" (flow run {j.get('run_id')}; cameras {', '.join(j.get('cameras') or []) or '-'})")  # fmt: skip
    return out


def _training_used(metrics: dict[str, float], tags: dict[str, str]) -> dict:
    """What the trainer really did (read from its optimizer at the end of training), where
    the training run recorded it; older runs recorded only the params."""
    out: dict = {}
    if "cvloop.train.optimizer_used" in tags:
        out["optimizer"] = tags["cvloop.train.optimizer_used"]
    for key in ("lr0_used", "momentum_used", "epochs_run", "epochs_planned", "best_epoch"):
        if f"train.{key}" in metrics:
            v = metrics[f"train.{key}"]
            out[key] = int(v) if key.startswith(("epochs", "best")) else v
    if "train.stopped_early" in metrics:
        out["stopped_early"] = bool(metrics["train.stopped_early"])
    return out


def _training_line(r: dict) -> str:
    t, p = r.get("training") or {}, r["train_params"]
    if "lr0_used" not in t:  # recorded before cvloop read the optimizer back
        return f"train        lr0 {p.get('lr0', '-')} epochs {p.get('epochs', '-')} (as configured)"
    line = (f"train        {t.get('optimizer', '?')} lr0 {t['lr0_used']:g} "
            f"momentum {t.get('momentum_used', float('nan')):g} "
            f"epochs {t.get('epochs_run', '-')}/{t.get('epochs_planned', '-')}")  # fmt: skip
    if t.get("stopped_early"):
        line += f" (stopped early, best epoch {t.get('best_epoch', '-')})"
    return line

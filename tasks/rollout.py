"""Rollout stage: the serving manifest and the reports operators read (plain + @task)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace

from prefect import task

from cvloop.core.rollout import (
    CANARY,
    K_APPROVAL_ASKED,
    K_CHALLENGER,
    K_CHAMPION,
    K_DRIFT_CAMERAS,
    K_ROLLOUT_LOG,
    K_STAGE,
    K_STAGE_LOG,
    K_STAGE_WALL,
    STABLE,
    Canary,
    Sample,
    canary,
    decide,
    with_groups,
)
from registry.manifest import read_manifest, single, write_manifest


def write_initial_manifest(version: str) -> str:
    """Point 100 % of traffic at the first champion, unless a manifest exists already."""
    from cvloop.adapters.storage import open_storage

    store = open_storage(create_bucket=True)
    current = read_manifest(store)
    if current is not None:
        return current.to_json()
    manifest = write_manifest(
        store,
        single(version, stage="stable"),
        who="cvloop bootstrap",
        reason=f"bootstrap: version {version} is the first champion",
    )
    return manifest.to_json()


def bootstrap_report(version, dataset, holdout, trained, holdout_pt, holdout_onnx) -> str:
    lines = [
        f"# Baseline champion: version {version}",
        "",
        "| what | value |",
        "|---|---|",
        f"| dataset | {dataset.name} (DVC md5 `{dataset.dvc_md5}`, git `{dataset.git_rev[:10]}`,"
        f" {dataset.files} files) |",
        f"| holdout | {holdout.name} (DVC md5 `{holdout.dvc_md5}`) |",
        f"| training run | `{trained.run_id}` ({trained.epochs_run} epochs, "
        f"{trained.train_seconds / 60:.1f} min) |",
        f"| holdout mAP50-95 / mAP50 (.pt) | {holdout_pt.map50_95:.3f} / {holdout_pt.map50:.3f} |",
        f"| holdout mAP50-95 / mAP50 (ONNX) | {holdout_onnx.map50_95:.3f} / "
        f"{holdout_onnx.map50:.3f} |",
        "",
        "| class | AP50-95 | AP50 |",
        "|---|---|---|",
    ]
    for cls, ap in holdout_pt.per_class_ap50_95.items():
        lines.append(f"| {cls} | {ap:.3f} | {holdout_pt.per_class_ap50.get(cls, 0):.3f} |")
    return "\n".join(lines) + "\n"


@task(name="publish_bootstrap_report")
def publish_bootstrap_report(version, dataset, holdout, trained, holdout_pt, holdout_onnx) -> str:
    from prefect.artifacts import create_markdown_artifact

    md = bootstrap_report(version, dataset, holdout, trained, holdout_pt, holdout_onnx)
    create_markdown_artifact(markdown=md, key="bootstrap", description="baseline champion")
    return md


write_initial_manifest_task = task(write_initial_manifest, name="write_initial_manifest")
publish_bootstrap_report_task = publish_bootstrap_report


# ---------------------------------------------------------------------------------------------
# the rollout: start, one tick (canary → decide → act), approve, rollback
# ---------------------------------------------------------------------------------------------
APPROVED_BY = (
    "cvloop.approved_by"  # the ML lead's approval: set it in the MLflow UI or `cvloop approve`
)
APPROVED_AT = "cvloop.approved_at"
REJECTED_BY = "cvloop.rejected_by"
ROLLOUT_STATUS = "cvloop.rollout.status"
ROLLOUT_SHARE = "cvloop.rollout.share"
ROLLOUT_REASON = "cvloop.rollout.reason"
ROLLOUT_EVIDENCE = (
    "cvloop.rollout.evidence"  # what decided the last tick: labels | pairing | guards
)
ROLLOUT_CANARY = "cvloop.rollout.canary"  # ok | breach | insufficient
ROLLOUT_KEPT = "cvloop.rollout.kept_share"  # per class: champion's confident boxes kept
ROLLOUT_LABELS = "cvloop.rollout.labels"  # frames with reviewed labels and each model's mAP


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="milliseconds")


def log_watermark(store) -> dt.datetime | None:
    """The newest frame time in the inference log (its newest date partition)."""
    import pyarrow.compute as pc

    from cvloop.adapters.inference_log import LOG_PREFIX, read_log

    dates = sorted(
        {k.split("date=", 1)[1][:10] for k in store.keys(f"{LOG_PREFIX}/") if "date=" in k}
    )
    if not dates:
        return None
    day = dt.date.fromisoformat(dates[-1])
    t = read_log(store, day, day + dt.timedelta(days=1), columns=["ts"])
    if t.num_rows == 0:
        return None
    return pc.max(t.column("ts")).as_py()


def log_groups(store, since: dt.datetime, until: dt.datetime) -> list[str]:
    """The camera groups that served frames with ``since < ts <= until``."""
    import pyarrow.compute as pc

    from cvloop.adapters.inference_log import read_log

    t = read_log(store, since + dt.timedelta(milliseconds=1), until + dt.timedelta(milliseconds=1),
                 columns=["camera_group"])  # fmt: skip
    return sorted(pc.unique(t.column("camera_group")).to_pylist()) if t.num_rows else []


def window_sample(
    store,
    version: str,
    since: dt.datetime,
    until: dt.datetime,
    drift_cameras=(),
    group: str | None = None,
):
    """What ``version`` served with ``since < ts <= until``, from the inference log.

    Latency and errors count every frame; detection volume and confidences leave out the
    ``drift_cameras`` the candidate was retrained for (it is meant to behave differently
    there: a champion blind at night against a challenger that sees is not a breach).
    ``group``: only the frames of that camera group."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from cvloop.adapters.inference_log import detections_per_frame, flatten_detections, read_log

    t = read_log(
        store,
        since + dt.timedelta(milliseconds=1),
        until + dt.timedelta(milliseconds=1),
        model_versions=[version],
        columns=["camera", "camera_group", "latency_ms", "error", "detections"],
    )
    if group is not None:
        t = t.filter(pc.equal(t.column("camera_group"), group))
    ok = t.filter(pc.is_null(t.column("error")))
    steady = ok
    if drift_cameras:
        keep = pc.invert(pc.is_in(ok.column("camera"), pa.array(list(drift_cameras), pa.string())))
        steady = ok.filter(keep)
    conf = flatten_detections(steady).column("conf").to_numpy() if steady.num_rows else []
    return Sample(
        t.num_rows,
        t.num_rows - ok.num_rows,
        ok.column("latency_ms").to_numpy(zero_copy_only=False).astype(float),
        np.asarray(conf, dtype=float),
        detections_per_frame(steady).to_numpy(zero_copy_only=False).astype(float),
    )


def _mirror(reg, version: str, tags: dict) -> None:
    """The rollout's state as tags on the model version (what the MLflow UI shows)."""
    reg.set_tags(version, tags)


def start_rollout(
    version: str | None = None, who: str | None = None, reason: str = "", force: bool = False
) -> dict:
    """First stage: the challenger takes ``rollout.stages[0].share`` % of the traffic.

    Only a version that passed every gate, and not one rolled back before (unless
    ``force``); idempotent for the version already rolling out.
    """
    from cvloop.adapters.storage import open_storage
    from cvloop.config.params import params
    from cvloop.core.errors import CvloopError
    from registry.manifest import Allocation, RolloutManifest
    from registry.models import CHALLENGER, CHAMPION, ModelRegistry

    reg = ModelRegistry.from_settings()
    store = open_storage()
    version = version or reg.alias_version(CHALLENGER)
    if version is None:
        raise CvloopError(
            "no version to roll out: no `challenger` alias",
            fix="name a version (`cvloop rollout start 4`), or let a retrain register one",
        )
    current = read_manifest(store)
    if current is not None and current.stage != STABLE:
        if current.extra.get(K_CHALLENGER) == str(version):
            return {"status": "already rolling out", "manifest": json.loads(current.to_json())}
        raise CvloopError(
            f"a rollout is in progress: v{current.extra.get(K_CHALLENGER)} at {current.stage}",
            fix="let it finish, or `cvloop rollback --reason ...` first",
        )
    tags = dict(reg.get_version(version).tags)
    if tags.get("cvloop.gate") != "passed":
        raise CvloopError(
            f"version {version} did not pass the gates (cvloop.gate = "
            f"{tags.get('cvloop.gate', 'missing')}): it is never rolled out",
            fix="see its gate report (runbooks/candidate.md)",
        )
    if tags.get(ROLLOUT_STATUS) in ("rolled-back", "stopped") and not force:
        raise CvloopError(
            f"version {version} was {tags[ROLLOUT_STATUS]} before: "
            f"{tags.get(ROLLOUT_REASON, 'no reason recorded')}",
            fix="fix the cause, then `cvloop rollout start VERSION --force`",
        )
    champion = reg.alias_version(CHAMPION)
    if champion is None or champion == str(version):
        raise CvloopError(f"version {version} is the champion already (or there is none)")
    p = params().rollout
    share = p.stages[0].share
    now, mark = _now(), log_watermark(store)
    since = _iso(mark) if mark else _iso(now)
    m = RolloutManifest(
        [Allocation(champion, 100.0 - share), Allocation(str(version), share)],
        stage=CANARY.format(share=share),
        extra={
            K_CHALLENGER: str(version),
            K_CHAMPION: champion,
            K_STAGE: "0",
            K_STAGE_WALL: _iso(now),
            K_STAGE_LOG: since,
            K_ROLLOUT_LOG: since,
            K_APPROVAL_ASKED: "",
            K_DRIFT_CAMERAS: tags.get("cvloop.drift.cameras", ""),
        },
    )
    reg.set_alias(CHALLENGER, str(version))
    write_manifest(store, m, who=who, reason=reason or f"rollout of v{version}: {share:g}%")
    _mirror(reg, str(version), {ROLLOUT_STATUS: "canary", ROLLOUT_SHARE: f"{share:g}"})
    _mirror(reg, champion, {ROLLOUT_SHARE: f"{100 - share:g}"})
    return {"status": "started", "manifest": json.loads(m.to_json())}


def _approval(tags: dict) -> tuple[bool, bool]:
    return bool(tags.get(APPROVED_BY, "").strip()), bool(tags.get(REJECTED_BY, "").strip())


def measure_canary(store, reg, m, mark: dt.datetime, c) -> Canary:
    """The canary of the rollout ``m`` up to ``mark``: the guards from the inference log and
    the quality evidence from both models on the same frames, fleet-wide and per group.

    The challenger is judged on what it served since its stage began; the champion on the
    same period, or since the rollout began when it serves too little now (at 100 %)."""
    chall, champ = m.extra[K_CHALLENGER], m.extra[K_CHAMPION]
    stage_since = dt.datetime.fromisoformat(m.extra[K_STAGE_LOG])
    rollout_since = dt.datetime.fromisoformat(m.extra[K_ROLLOUT_LOG])
    drift = [x for x in m.extra.get(K_DRIFT_CAMERAS, "").split(",") if x]
    a = window_sample(store, chall, stage_since, mark, drift)
    champ_since = stage_since
    b = window_sample(store, champ, stage_since, mark, drift)
    if b.frames < c.min_frames:  # the champion serves no traffic at 100 %: compare
        champ_since = rollout_since  # with its canary days
        b = window_sample(store, champ, rollout_since, mark, drift)
    if a.frames < c.min_frames or b.frames < c.min_frames:
        return canary(a, b, c)  # too few frames to judge: no model is run
    windows = {"challenger": (stage_since, mark), "champion": (champ_since, mark)}
    frames, labeled, counts = paired_frames(store, reg, chall, champ, windows, c.quality)
    rename = _champion_names(reg, champ, chall)
    prec, where = holdout_precision(store, reg, champ, c.quality)
    prec = {rename.get(k, k): v for k, v in prec.items()}
    result = canary(a, b, c, quality_of(frames, labeled, c.quality, prec, where))
    groups = log_groups(store, stage_since, mark)
    if len(groups) > 1:  # each camera group judged on its own too
        per = {}
        for g in groups:
            ag = window_sample(store, chall, stage_since, mark, drift, g)
            bg = window_sample(store, champ, champ_since, mark, drift, g)
            if bg.frames < c.min_frames and champ_since != rollout_since:
                bg = window_sample(store, champ, rollout_since, mark, drift, g)
            frames_g = [f for f in frames if f.group == g]
            labeled_g = {k: v for k, v in labeled.items() if v[0].group == g}
            qg = quality_of(frames_g, labeled_g, c.quality, prec, where)
            per[g] = canary(ag, bg, c, qg)
        result = with_groups(result, per)
    notes = [f"quality: {counts['sampled']} paired frames (a sample of the "
             f"{counts['challenger_served']} challenger / {counts['champion_served']} champion "
             "frames, each scored by the other model too)"]  # fmt: skip
    if counts["missing"]:
        notes.append(f"{counts['missing']} sampled frames are gone from the frame store "
                     "(not scored)")  # fmt: skip
    if drift:
        notes.append(f"volume and confidence leave out the drift cameras {', '.join(drift)} "
                     "(the candidate was retrained to change there)")  # fmt: skip
    return replace(result, note="; ".join(notes))


def canary_tags(result: Canary) -> dict[str, str]:
    """What decided the last tick, on the challenger's model version (the MLflow UI)."""
    q = result.quality or {}
    kept = {k: v.get("kept_share") for k, v in (q.get("classes") or {}).items()}
    labels = q.get("labels") or {}
    return {
        ROLLOUT_EVIDENCE: result.evidence,
        ROLLOUT_CANARY: result.status,
        ROLLOUT_KEPT: json.dumps({k: None if v is None else round(v, 4) for k, v in kept.items()}),
        ROLLOUT_LABELS: json.dumps(
            {
                "frames": labels.get("frames", 0),
                "challenger_map50_95": (labels.get("challenger") or {}).get("map50_95"),
                "champion_map50_95": (labels.get("champion") or {}).get("map50_95"),
            }
        ),
    }


def rollout_tick(who: str = "cvloop rollout") -> dict:
    """One step of the rollout in progress: canary from the inference log, then hold,
    advance, ask for approval, promote, roll back or stop. Safe to run again at any time:
    the manifest and the aliases are reconciled first (a crash between them is finished)."""
    from cvloop.adapters.storage import open_storage
    from cvloop.config.params import params
    from registry.models import CHAMPION, ModelRegistry

    store = open_storage()
    reg = ModelRegistry.from_settings()
    m = read_manifest(store)
    if m is None or m.stage == STABLE:
        return {"status": "idle", **_reconcile_stable(reg, m)}
    p = params().rollout
    chall = m.extra[K_CHALLENGER]
    if reg.alias_version(CHAMPION) == chall:  # promoted, then the manifest write was lost
        return _promote(store, reg, m, who, "promotion finished after an interruption")
    idx = int(m.extra[K_STAGE])
    shares = [s.share for s in p.stages]
    hours = [s.hours for s in p.stages]
    stage_since = dt.datetime.fromisoformat(m.extra[K_STAGE_LOG])
    mark = log_watermark(store) or stage_since
    result = measure_canary(store, reg, m, mark, p.canary)
    tags = dict(reg.get_version(chall).tags)
    approved, rejected = _approval(tags)
    asked = m.extra.get(K_APPROVAL_ASKED) or ""
    now = _now()
    d = decide(
        idx,
        shares,
        hours,
        max(0.0, (mark - stage_since).total_seconds() / 3600),
        result,
        approval_before_share=p.approval_before_share,
        approved=approved,
        rejected=rejected,
        approval_asked_at=dt.datetime.fromisoformat(asked) if asked else None,
        deadline_hours=p.approval_deadline_hours,
        now=now,
    )
    out = {"status": d.action, "reason": d.reason, "canary": result.as_dict(), "version": chall}
    _mirror(reg, chall, canary_tags(result))
    if d.action == "await_approval" and not asked:
        m.extra[K_APPROVAL_ASKED] = _iso(now)
        write_manifest(store, m, who=who, reason=f"v{chall}: {d.reason}")
        _mirror(reg, chall, {ROLLOUT_STATUS: "awaiting-approval"})
    elif d.action == "advance":
        why = d.reason
        if shares[idx + 1] >= p.approval_before_share:
            why += f"; approved by {tags[APPROVED_BY]}"
        _advance(store, reg, m, idx + 1, shares[idx + 1], mark, who, why)
    elif d.action == "promote":
        return {**out, **_promote(store, reg, m, who, d.reason)}
    elif d.action in ("rollback", "stop"):
        return {**out, **_back_to_champion(store, reg, m, who, d.reason, d.action)}
    return {**out, "manifest": json.loads(read_manifest(store).to_json())}


def _advance(store, reg, m, idx: int, share: float, mark, who: str, reason: str) -> None:
    from registry.manifest import Allocation

    chall, champ = m.extra[K_CHALLENGER], m.extra[K_CHAMPION]
    allocs = [Allocation(chall, 100.0)] if share >= 100 else [
        Allocation(champ, 100.0 - share), Allocation(chall, share)
    ]  # fmt: skip
    m.allocations = allocs
    m.stage = CANARY.format(share=share)
    m.extra.update({K_STAGE: str(idx), K_STAGE_WALL: _iso(_now()), K_STAGE_LOG: _iso(mark)})
    write_manifest(store, m, who=who, reason=f"v{chall} to {share:g}%: {reason}")
    _mirror(reg, chall, {ROLLOUT_STATUS: "canary", ROLLOUT_SHARE: f"{share:g}"})
    _mirror(reg, champ, {ROLLOUT_SHARE: f"{100 - share:g}"})


def _promote(store, reg, m, who: str, reason: str) -> dict:
    """Champion alias to the challenger (the old one keeps ``previous-champion``), then the
    manifest: a crash in between is finished by the next tick."""
    from registry.models import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION

    chall, champ = m.extra[K_CHALLENGER], m.extra[K_CHAMPION]
    if reg.alias_version(CHAMPION) != chall:
        reg.set_alias(PREVIOUS_CHAMPION, champ)
        reg.set_alias(CHAMPION, chall)
    if reg.alias_version(CHALLENGER) == chall:  # a newer candidate may hold it by now
        reg.delete_alias(CHALLENGER)
    final = single(chall, stage="stable")
    final.extra = {"promoted": chall, "previous_champion": champ}
    write_manifest(store, final, who=who, reason=f"v{chall} is the champion: {reason}")
    _mirror(reg, chall, {ROLLOUT_STATUS: "champion", ROLLOUT_SHARE: "100",
                         "cvloop.promoted_at": _iso(_now()), ROLLOUT_REASON: reason})  # fmt: skip
    _mirror(reg, champ, {ROLLOUT_STATUS: "previous-champion", ROLLOUT_SHARE: "0"})
    return {"status": "promote", "champion": chall, "previous_champion": champ,
            "manifest": json.loads(final.to_json())}  # fmt: skip


def _back_to_champion(store, reg, m, who: str, reason: str, action: str) -> dict:
    """Traffic back to the champion first (the manifest), then the alias and the tags."""

    chall, champ = m.extra[K_CHALLENGER], m.extra[K_CHAMPION]
    final = single(champ, stage="stable")
    final.extra = {"rolled_back": chall} if action == "rollback" else {"stopped": chall}
    write_manifest(store, final, who=who, reason=f"v{chall} {action}: {reason}")
    _reconcile_stable(reg, final, reason)
    return {"status": action, "champion": champ, "manifest": json.loads(final.to_json())}


def _reconcile_stable(reg, m, reason: str | None = None) -> dict:
    """After a rollback (or a stop) the manifest says so: the challenger alias goes and the
    reason is tagged, idempotently (also after a crash between the two)."""
    from registry.models import CHALLENGER

    if m is None:
        return {}
    out = {}
    if "rolled_back" in m.extra or "stopped" in m.extra:
        v = m.extra.get("rolled_back") or m.extra.get("stopped")
        status = "rolled-back" if "rolled_back" in m.extra else "stopped"
        if reg.alias_version(CHALLENGER) == v and status == "rolled-back":
            reg.delete_alias(CHALLENGER)
        tags = dict(reg.get_version(v).tags)
        if tags.get(ROLLOUT_STATUS) != status:
            _mirror(reg, v, {ROLLOUT_STATUS: status, ROLLOUT_SHARE: "0",
                             ROLLOUT_REASON: (reason or m.reason)[:4900]})  # fmt: skip
        out[status] = v
    return out


def approve(version: str, who: str, *, reject: bool = False, note: str = "") -> dict:
    """The ML lead's decision on a version: the same tag the MLflow UI sets."""
    from registry.models import ModelRegistry

    reg = ModelRegistry.from_settings()
    reg.get_version(version)  # a clear error for an unknown version
    if reject:
        tags = {REJECTED_BY: who, "cvloop.rejected_at": _iso(_now()), "cvloop.rejected_note": note}
    else:
        tags = {APPROVED_BY: who, APPROVED_AT: _iso(_now()), "cvloop.approved_note": note}
    reg.set_tags(version, {k: v for k, v in tags.items() if v})
    return tags


def rollback_now(reason: str, who: str | None = None) -> dict:
    """Immediate manual rollback: a rollout in progress goes back to its champion; with no
    rollout in progress, the champion goes back to ``previous-champion``."""
    from cvloop.adapters.storage import open_storage
    from cvloop.core.errors import CvloopError
    from registry.models import CHAMPION, PREVIOUS_CHAMPION, ModelRegistry

    store = open_storage()
    reg = ModelRegistry.from_settings()
    who = who or "operator"
    m = read_manifest(store)
    if m is not None and m.stage != STABLE:
        return _back_to_champion(store, reg, m, who, f"manual rollback: {reason}", "rollback")
    current, previous = reg.alias_version(CHAMPION), reg.alias_version(PREVIOUS_CHAMPION)
    if previous is None or previous == current:
        raise CvloopError(
            f"nothing to roll back to: champion v{current}, no `previous-champion` alias",
            fix="set the alias `previous-champion` on the version to serve in MLflow first",
        )
    reg.set_alias(CHAMPION, previous)
    reg.delete_alias(PREVIOUS_CHAMPION)
    final = single(previous, stage="stable")
    final.extra = {"rolled_back": current}
    write_manifest(store, final, who=who, reason=f"manual rollback of v{current}: {reason}")
    _mirror(reg, current, {ROLLOUT_STATUS: "rolled-back", ROLLOUT_SHARE: "0",
                           ROLLOUT_REASON: f"manual rollback: {reason}"})  # fmt: skip
    _mirror(reg, previous, {ROLLOUT_STATUS: "champion", ROLLOUT_SHARE: "100"})
    return {"status": "rollback", "champion": previous, "rolled_back": current}


# ---------------------------------------------------------------------------------------------
# what serves production, trained on what (cvloop status)
# ---------------------------------------------------------------------------------------------
def production_status(history: int = 10) -> dict:
    """The traffic split, and for every serving version (and the aliased ones) its lineage,
    metrics, gates, benchmark, approval and rollout state; the last rollout changes."""
    from cvloop.adapters.storage import open_storage
    from cvloop.config.settings import load_settings
    from registry.manifest import history as manifest_history
    from registry.models import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION, ModelRegistry

    store = open_storage()
    reg = ModelRegistry.from_settings()
    m = read_manifest(store)
    aliases = {a: reg.alias_version(a) for a in (CHAMPION, CHALLENGER, PREVIOUS_CHAMPION)}
    serving = {a.version: a.share for a in m.allocations} if m else {}
    if not serving and aliases[CHAMPION]:
        serving = {aliases[CHAMPION]: 100.0}
    versions = list(dict.fromkeys([*serving, *[v for v in aliases.values() if v]]))
    uri = load_settings().mlflow_tracking_uri
    rows = []
    for v in versions:
        mv = reg.get_version(v)
        t = dict(mv.tags)
        try:
            run = reg.client.get_run(mv.run_id)
            run_params, exp = dict(run.data.params), run.info.experiment_id
        except Exception:
            run_params, exp = {}, "0"
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
                "holdout_map50_95": t.get("cvloop.holdout.map50_95"),
                "holdout_map50": t.get("cvloop.holdout.map50"),
                "gate": t.get("cvloop.gate", "n/a (baseline)"),
                "gate_reasons": json.loads(t.get("cvloop.gate.reasons", "[]") or "[]"),
                "bench_onnx": json.loads(t.get("cvloop.bench.onnx", "{}") or "{}"),
                "approved_by": t.get(APPROVED_BY),
                "rollout_status": t.get(ROLLOUT_STATUS),
                "rollout_reason": t.get(ROLLOUT_REASON),
                "rollout_evidence": t.get(ROLLOUT_EVIDENCE),
                "rollout_kept_share": json.loads(t.get(ROLLOUT_KEPT, "{}") or "{}"),
                "sha256_pt": t.get("cvloop.sha256.pt"),
                "created": mv.creation_timestamp,
            }
        )
    changes = manifest_history(store)[-history:]
    from tasks.schema import schema_summary

    try:
        data = schema_summary()
    except Exception as exc:  # the data repository is elsewhere: say so, never fail status
        data = {"error": str(exc).splitlines()[0]}
    return {
        "data": data,
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
            f"  trained on   {r['dataset_version']} (DVC {str(r['dataset_dvc_md5'])[:16]}), "
            f"holdout {r['holdout_version']}, {r.get('schema_version', 'schema-v1')} "
            f"({', '.join(r.get('classes') or [])}), "
            + (
                f"fine-tuned from v{r['parent_version']}"
                if (r["parent_version"] or "none") != "none"
                else "trained from scratch"
            ),
            f"  code         git {str(r['git_commit'])[:12]}  params {str(r['params_sha256'])[:12]}"
            f"  lr0 {r['train_params'].get('lr0', '-')} epochs {r['train_params'].get('epochs', '-')}",
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


# ---------------------------------------------------------------------------------------------
# quality evidence: both models on the same frames (cvloop/core/pairing.py)
# ---------------------------------------------------------------------------------------------
def _served_frames(store, version: str, since: dt.datetime, until: dt.datetime):
    """The frames ``version`` served without error with ``since < ts <= until``."""
    import pyarrow.compute as pc

    from cvloop.adapters.inference_log import read_log

    t = read_log(store, since + dt.timedelta(milliseconds=1), until + dt.timedelta(milliseconds=1),
                 model_versions=[version],
                 columns=["ts", "camera", "camera_group", "frame_key", "error", "detections"])  # fmt: skip
    return t.filter(pc.is_null(t.column("error")))


def _sample_keys(keys: list[str], n: int) -> set[str]:
    """A deterministic sample of ``n`` frame keys: the same frames stay in the sample as
    the window grows, so successive ticks judge mostly the same frames."""
    import hashlib

    order = sorted(keys, key=lambda k: hashlib.sha256(f"canary|{k}".encode()).digest())
    return set(order[:n])


def _log_boxes(dets, min_conf: float, rename: dict[str, str]):
    from cvloop.core.frames import LabelBox

    return [
        (LabelBox(rename.get(d["label"], d["label"]), d["cx"], d["cy"], d["w"], d["h"]), d["conf"])
        for d in dets or ()
        if d["conf"] >= min_conf
    ]


def _rescore(store, detector, rows: list[dict], conf: float, rename: dict[str, str]):
    """The other model's boxes on each frame (frame key -> boxes); frames whose image is
    gone or unreadable are left out and counted."""
    from cvloop.adapters.detector import decode_jpeg
    from cvloop.core.errors import CvloopError

    out, missing = {}, 0
    for i in range(0, len(rows), 16):
        batch, images = [], []
        for r in rows[i : i + 16]:
            try:
                images.append(decode_jpeg(store.get_bytes(r["frame_key"])))
                batch.append(r)
            except (CvloopError, OSError, KeyError, FileNotFoundError):
                missing += 1
        if not images:
            continue
        for r, det in zip(batch, detector.predict(images, conf=conf), strict=True):
            out[r["frame_key"]] = _boxes(detector, det, rename)
    return out, missing


def _champion_names(reg, champion: str, challenger: str) -> dict[str, str]:
    """Champion class name -> the challenger's name for it, when a schema change renamed a
    class between them (the log names the classes of the model that served)."""
    a = reg.fetch(champion).classes
    b = reg.fetch(challenger).classes
    if a == b:
        return {}
    from tasks.schema import schema_log

    sources = schema_log().sources(list(a)) or {c: c for c in b if c in a}
    return {old: new for new, old in sources.items() if old != new}


def paired_frames(
    store, reg, challenger: str, champion: str, windows: dict[str, tuple], q
) -> tuple[list, dict, dict]:
    """Frames each model served in its window (``windows``: role -> (since, until)), a
    sample of ``q.rescore_frames`` each plus every frame with reviewed labels, scored by
    the other model too. Returns (sampled paired frames, labeled paired frames by key,
    counts)."""
    from cvloop.adapters.detector import OnnxDetector
    from cvloop.adapters.label_store import read_labels
    from cvloop.core.pairing import PairedFrame

    versions = {"challenger": challenger, "champion": champion}
    rename = _champion_names(reg, champion, challenger)
    served = {role: _served_frames(store, versions[role], *windows[role]).to_pylist()
              for role in versions}  # fmt: skip
    since = min(w[0] for w in windows.values())
    until = max(w[1] for w in windows.values())
    keys = [r["frame_key"] for rows in served.values() for r in rows]
    labels = read_labels(store, since, until + dt.timedelta(milliseconds=1), keys) if keys else {}
    detectors = {}
    for role, v in versions.items():
        m = reg.fetch(v)
        detectors[role] = OnnxDetector(m.onnx, m.classes, m.imgsz, spinning=False)
    sampled, labeled, counts = [], {}, {"missing": 0}
    for role, rows in served.items():
        other = "champion" if role == "challenger" else "challenger"
        pick = _sample_keys([r["frame_key"] for r in rows], q.rescore_frames)
        todo = [r for r in rows if r["frame_key"] in pick or r["frame_key"] in labels]
        names_other = rename if other == "champion" else {}
        boxes, missing = _rescore(store, detectors[other], todo, q.match_conf, names_other)
        counts["missing"] += missing
        counts[f"{role}_served"] = len(rows)
        for r in todo:
            if r["frame_key"] not in boxes:
                continue
            own = _log_boxes(r["detections"], q.match_conf, rename if role == "champion" else {})
            pair = {role: own, other: boxes[r["frame_key"]]}
            f = PairedFrame(r["frame_key"], r["camera"], r["camera_group"] or "default", role,
                            pair["champion"], pair["challenger"])  # fmt: skip
            if r["frame_key"] in pick:
                sampled.append(f)
            if r["frame_key"] in labels:
                labeled[r["frame_key"]] = f
    counts["labeled"] = len(labeled)
    counts["sampled"] = len(sampled)
    return sampled, {k: (f, labels[k]) for k, f in labeled.items()}, counts


def holdout_precision(store, reg, champion: str, q) -> tuple[dict[str, tuple[int, int]], str]:
    """The champion's (right, confident) boxes per class at ``q.confident_floor`` on the
    current holdout of the data repo, and the holdout's name: what its own false positives
    explain of a challenger's lost boxes (cvloop/core/pairing.py). Cached in the store per
    champion version and holdout content; ``({}, reason)`` when no holdout is at hand (the
    canary then takes the champion's confident boxes as right)."""
    import hashlib

    from cvloop.adapters.datasets import read_yolo_labels, yolo_split_frames
    from cvloop.adapters.detector import OnnxDetector, decode_jpeg
    from cvloop.core.pairing import champion_precision
    from tasks.data import HOLDOUT_DIR, data_repo

    try:
        root = data_repo().root / HOLDOUT_DIR
        pairs = yolo_split_frames(root / "data.yaml", "val")
    except Exception as exc:  # no data repo here (a team's serving-side host): say so
        return {}, f"no holdout ({type(exc).__name__}: {str(exc)[:80]})"
    if not pairs:
        return {}, f"no holdout frames in {root}"
    name = (root / "VERSION").read_text().strip() if (root / "VERSION").exists() else "holdout"
    digest = hashlib.sha256()
    for img, lab in pairs:
        digest.update(img.name.encode())
        digest.update(lab.read_bytes() if lab.exists() else b"")
    key = (f"rollout/reference/champion-v{champion}-{name}-{digest.hexdigest()[:12]}-"
           f"{q.confident_floor:g}-{q.match_iou:g}.json")  # fmt: skip
    if store.exists(key):
        cached = json.loads(store.get_text(key))
        return {k: tuple(v) for k, v in cached["precision"].items()}, name
    m = reg.fetch(champion)
    det = OnnxDetector(m.onnx, m.classes, m.imgsz, spinning=False)
    frames = []
    for img, lab in pairs:
        (d,) = det.predict([decode_jpeg(img.read_bytes())], conf=q.confident_floor)
        frames.append((_boxes(det, d, {}), read_yolo_labels(lab, m.classes)))
    prec = champion_precision(frames, q.confident_floor, q.match_iou)
    store.put_text(key, json.dumps({"champion": champion, "holdout": name, "frames": len(pairs),
                                    "precision": prec}, indent=1))  # fmt: skip
    return prec, name


def _boxes(detector, det, rename: dict[str, str]):
    """A detector's output as (LabelBox, confidence) pairs, names mapped by ``rename``."""
    from cvloop.core.frames import LabelBox

    names = [detector.class_names[int(c)] for c in det.classes]
    return [
        (LabelBox(rename.get(n, n), *map(float, b)), float(s))
        for n, s, b in zip(names, det.scores, det.cxcywh(), strict=True)
    ]


def quality_of(
    frames: list,
    labeled: dict,
    q,
    precision: dict[str, tuple[int, int]] | None = None,
    where: str = "the holdout",
):
    """What the paired frames and the labeled ones say (the labels decide where there are
    enough of them; the pairing is reported either way)."""
    from cvloop.core.pairing import (
        decide_quality,
        judge_labels,
        judge_pairing,
        kept_by_camera,
        mean_ap,
        pair_classes,
    )

    match = {"confident_floor": q.confident_floor, "match_conf": q.match_conf,
             "match_iou": q.match_iou}  # fmt: skip
    pairing = judge_pairing(pair_classes(frames, **match), len(frames), q, precision, where)
    pairing.by_camera = kept_by_camera(frames, **match)
    labels = None
    if labeled:
        pairs = list(labeled.values())
        sources = ", ".join(sorted({lab.source for _, lab in pairs}))
        champ = mean_ap([(f.champion, lab.boxes) for f, lab in pairs])
        chall = mean_ap([(f.challenger, lab.boxes) for f, lab in pairs])
        labels = judge_labels(chall, champ, q, source=f"reviewed labels ({sources})")
        if labels is None:
            pairing.note = "; ".join(x for x in (pairing.note, (
                f"{len(pairs)} frames with reviewed labels in the window: "
                f"{q.labels_min_frames} needed for the labels to decide")) if x)  # fmt: skip
            pairing.labels = {"frames": len(pairs), "source": sources, "champion": champ,
                              "challenger": chall}  # fmt: skip
    return decide_quality(pairing, labels)


def _pct(x) -> str:
    return "-" if x is None else f"{x:.1%}"


def canary_report(result: dict) -> str:
    """The rollout tick in markdown: the decision, what decided it (labels, pairing or the
    guards), the per-class pairing numbers and every check."""
    lines = [f"# Rollout: {result['status']}", ""]
    if result.get("reason"):
        lines += [result["reason"], ""]
    c = result.get("canary") or {}
    if not c.get("checks"):
        return "\n".join(lines) + "\n"
    q = c.get("quality") or {}
    lines += [
        f"**Decided by: {c.get('evidence', 'none')}** (canary {c['status']}; challenger "
        f"{c['challenger_frames']} frames, champion {c['champion_frames']} frames, same period "
        "of the inference log). " + (c.get("note") or ""),
        "",
        "| check | kind | result | detail |",
        "|---|---|---|---|",
    ]
    for x in c["checks"]:
        res = "pass" if x["passed"] else ("hold" if x.get("held") else "**FAIL**")
        if x.get("kind") == "signal":
            res = "signal"
        lines.append(f"| {x['name']} | {x.get('kind', 'guard')} | {res} | {x['detail']} |")
    classes = q.get("classes") or {}
    if classes:
        lines += [
            "",
            f"Pairing per class ({q.get('frames', 0)} frames scored by both models): the "
            "champion's confident boxes the challenger keeps, and the challenger's confident "
            "boxes the champion finds." + (f" {q['note']}." if q.get("note") else ""),
            "",
            "| class | champion confident | kept by challenger | kept share | challenger "
            "confident | found by champion | found share |",
            "|---|---|---|---|---|---|---|",
        ]
        for k, v in classes.items():
            lines.append(
                f"| {k} | {v['champion_confident']} | {v['kept_by_challenger']} | "
                f"{_pct(v['kept_share'])} | {v['challenger_confident']} | "
                f"{v['found_by_champion']} | {_pct(v['found_share'])} |"
            )
    cams = q.get("by_camera") or {}
    if cams:
        lines += ["", "| camera | champion confident | kept share |", "|---|---|---|"]
        for k, v in cams.items():
            n = v["champion_confident"]
            lines.append(f"| {k} | {n} | {_pct(v['kept_by_challenger'] / n if n else None)} |")
    lab = q.get("labels") or {}
    if lab.get("champion"):
        a, b = lab["challenger"], lab["champion"]
        lines += [
            "",
            f"Reviewed labels: {lab['frames']} frames ({lab.get('source', '')}): mAP50-95 "
            f"challenger {a.get('map50_95') or 0:.3f} vs champion {b.get('map50_95') or 0:.3f}"
            + (
                " — the labels decide."
                if c.get("evidence") == "labels"
                else " (too few to decide)."
            ),
        ]
    else:
        lines += ["", "Reviewed labels: none for frames of this window (the pairing decides)."]
    return "\n".join(lines) + "\n"

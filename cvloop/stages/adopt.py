"""Adoption: version 1 of everything from what a team brings — its checkpoint, its labeled
data, its holdout — instead of the synthetic baseline (``cvloop adopt``, flows/adopt.py).

Order, each step idempotent (a re-run after a crash ends in the same state):

1. the checkpoint's sha256 is recorded on the adoption's MLflow run *before* the file is
   loaded; the adoption run of a file is found again by that hash;
2. the file is read safely (:mod:`cvloop.adapters.checkpoint`): a detector, its class
   names (schema v1), its imgsz, architecture and Ultralytics version;
3. the labeled data is imported (:mod:`cvloop.adapters.label_import`), every frame checked
   by the annotation suite reviewed frames pass; bad frames go to a quarantine report;
4. the holdout is the team's own set, or carved out of the data (stratified), and never
   shares a frame or a near-duplicate with training;
5. both are versioned (``dataset-v1``, ``holdout-v1``), the champion is scored on the
   holdout (.pt and ONNX), registered with ``cvloop.source = adopted``, and serves 100 %.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cvloop.adapters.checkpoint import CheckpointInfo, inspect_checkpoint, sha256_of
from cvloop.core.errors import CvloopError
from cvloop.stages.model import TrainedModel
from registry.models import MODEL_ARTIFACT_DIR
from registry.names import (
    ADOPT_ARCHITECTURE,
    ADOPT_IMGSZ_FROM,
    ADOPT_ONNX,
    ADOPT_ORIGIN,
    ADOPT_SAVED_AT,
    ADOPT_SHA256,
    ADOPT_ULTRALYTICS,
    FLOW,
    SOURCE,
)

if TYPE_CHECKING:
    from cvloop.context import Context
    from cvloop.core.schema import ClassSchema


@dataclass(frozen=True)
class AdoptRun:
    run_id: str
    sha256: str
    origin: str


def start_adoption(ctx: Context, checkpoint: str) -> AdoptRun:
    """The adoption's MLflow run, keyed by the checkpoint's sha256 (recorded before any
    load); the same file always gets the same run."""
    origin = str(Path(checkpoint).expanduser().resolve())
    sha = sha256_of(origin)
    exp = ctx.params.registry.experiment
    found = ctx.tracker.find_runs(exp, tags={ADOPT_SHA256: sha}, max_results=1)
    if found:
        return AdoptRun(found[0].run_id, sha, origin)
    run_id = ctx.tracker.start_run(exp, f"adopt-{sha[:12]}", None,
                                   {FLOW: "adopt", SOURCE: "adopted", ADOPT_SHA256: sha,
                                    ADOPT_ORIGIN: origin})  # fmt: skip
    return AdoptRun(run_id, sha, origin)


def inspect_adopted(ctx: Context, run: AdoptRun, imgsz: int | None = None) -> CheckpointInfo:
    """Read the recorded file (refused if it changed since) and log what it says."""
    try:
        info = inspect_checkpoint(run.origin, run.sha256, imgsz)
    except CvloopError as exc:
        ctx.tracker.set_tags(run.run_id, {"cvloop.adopt.refused": str(exc)[:4000]})
        ctx.tracker.finish(run.run_id, "FAILED")
        raise
    ctx.tracker.log_params(run.run_id, {
        "architecture": info.architecture, "imgsz": info.imgsz, "classes": len(info.classes),
        "ultralytics_version": info.ultralytics_version, "parameters": info.parameters,
    })  # fmt: skip
    ctx.tracker.set_tags(run.run_id, {
        ADOPT_ARCHITECTURE: info.architecture, ADOPT_ULTRALYTICS: info.ultralytics_version,
        ADOPT_SAVED_AT: info.saved_at, ADOPT_IMGSZ_FROM: info.imgsz_from,
        "cvloop.adopt.refused": "",
    })  # fmt: skip
    return info


def refuse_foreign_state(ctx: Context, run: AdoptRun) -> str | None:
    """The version already adopted from this file (a finished adoption: nothing to do), or
    None; refused when the project already has a champion or data versions of its own."""
    from registry.names import CHAMPION, REGISTRATION, sha256_tag

    reg = ctx.registry
    champ = reg.alias_version(CHAMPION)
    if champ is not None:
        tags = reg.get_version(champ).tags
        if tags.get(SOURCE) == "adopted" and tags.get(sha256_tag("pt")) == run.sha256:
            # registered by this adoption; a crash before it was marked complete resumes
            return champ if tags.get(REGISTRATION) == "complete" else None
        raise CvloopError(
            f"this project already has a champion (version {champ}, "
            f"{'adopted from ' + tags.get(ADOPT_ORIGIN, '?') if tags.get(SOURCE) else 'trained by cvloop'})",
            fix="adopt into a fresh project (its own registry.model_name, CVLOOP_DATA_REPO and "
            "frame store: runbooks/adopt.md); to replace a champion, register a candidate "
            "and roll it out",
        )
    repo = ctx.data_repo
    repo.ensure()
    for tag in [*repo.tags("dataset-v*"), *repo.tags("holdout-v*")]:
        message = repo.tag_message(tag) or ""
        if f"adopt {run.sha256[:12]}" not in message:
            raise CvloopError(
                f"the data repository {repo.root} already holds {tag} ({message.strip()[:80]})",
                fix="adopt into a fresh data repository (CVLOOP_DATA_REPO, or `cvloop init`)",
            )
    return None


def adopt_schema(ctx: Context, info: CheckpointInfo) -> ClassSchema:
    """Schema v1 = the checkpoint's class names (written as the data repo's ``schema.yaml``
    with the imported frames, once they passed their checks). An existing schema must say
    the same."""
    from cvloop.core.schema import SCHEMA_FILE, SchemaLog

    path = ctx.data_repo.root / SCHEMA_FILE
    if path.exists():
        log = SchemaLog.from_yaml(path.read_text(), str(path))
        if list(log.versions[0].classes) != info.classes:
            raise CvloopError(
                f"the data repository's schema-v1 is {list(log.versions[0].classes)}, the "
                f"checkpoint names {info.classes}",
                fix="adopt into a fresh data repository, or adopt the checkpoint this "
                "repository's data was labeled for",
            )
        return log.current
    return SchemaLog.initial(info.classes, ctx.params.schema_.label_policy_version).current


# ---- the model -----------------------------------------------------------------------------


def prepare_adopted_model(
    ctx: Context, run: AdoptRun, info: CheckpointInfo, onnx: str | None, out_dir: str
) -> TrainedModel:
    """The checkpoint (checked against its recorded sha256 again) and its ONNX export —
    the team's own, checked against the checkpoint's classes and imgsz, or exported here —
    as the run's ``model/`` artifacts, the way a model cvloop trained is registered."""
    from cvloop.adapters.detector import OnnxDetector
    from cvloop.adapters.training import export_onnx

    model_dir = Path(out_dir) / run.run_id / MODEL_ARTIFACT_DIR
    model_dir.mkdir(parents=True, exist_ok=True)
    pt = model_dir / "best.pt"
    shutil.copyfile(run.origin, pt)
    if sha256_of(pt) != run.sha256:
        raise CvloopError(f"checkpoint {run.origin}: it changed after its sha256 was recorded",
                          fix="let the copy finish, then run the adoption again")  # fmt: skip
    dest = model_dir / "best.onnx"
    if onnx:
        src = Path(onnx).expanduser().resolve()
        if not src.is_file():
            raise CvloopError(f"ONNX export {src}: no such file",
                              fix="give the .onnx exported from this checkpoint, or leave "
                              "--onnx out and cvloop exports it")  # fmt: skip
        shutil.copyfile(src, dest)
        try:
            det = OnnxDetector(dest, info.classes, info.imgsz)
        except CvloopError as exc:
            raise CvloopError(f"ONNX export {src}: {exc}",
                              fix="export it from this checkpoint (yolo export format=onnx), "
                              "or leave --onnx out") from exc  # fmt: skip
        shape = det.session.get_inputs()[0].shape
        if isinstance(shape[-1], int) and shape[-1] != info.imgsz:
            raise CvloopError(f"ONNX export {src}: its input is {shape[-1]} px, the checkpoint's "
                              f"imgsz is {info.imgsz}",
                              fix=f"export it at imgsz={info.imgsz}, or leave --onnx out")  # fmt: skip
    else:
        export_onnx(pt, info.imgsz, dest)
    (model_dir / "model.json").write_text(json.dumps(
        {"classes": info.classes, "imgsz": info.imgsz, "source": run.origin,
         "adopted": info.as_dict()}, indent=2))  # fmt: skip
    ctx.tracker.log_folder(run.run_id, model_dir, MODEL_ARTIFACT_DIR)
    ctx.tracker.set_tags(run.run_id, {ADOPT_ONNX: _onnx_from(onnx)})
    return TrainedModel(run.run_id, str(pt), str(dest), info.classes, info.imgsz,
                        info.epochs_trained or 0, 0.0)  # fmt: skip


def _onnx_from(onnx: str | None) -> str:
    return f"given: {Path(onnx).expanduser().resolve()}" if onnx else "exported by cvloop"


def adopted_lineage(ctx: Context, dataset, holdout, schema) -> dict[str, str]:
    """What is known, and nothing invented: the data versions it was adopted with, the
    schema, cvloop's code and params; no parent and no cvloop training run."""
    from cvloop.config.lineage import git_commit, params_sha256

    return {
        "holdout_version": holdout.name,
        "git_commit": git_commit(),
        "params_sha256": params_sha256(),
        "parent_version": "none",
        "schema_version": schema.tag,
        "label_policy_version": str(schema.label_policy_version),
        "dataset_version": f"unknown: trained outside cvloop ({dataset.name} adopted with it)",
    }


def adopted_tags(
    run: AdoptRun, info: CheckpointInfo, data, holdout_pt, holdout_onnx, onnx: str | None = None
) -> dict:
    from registry.names import ADOPT_DATASET, ADOPT_PARITY, HOLDOUT_ONNX_MAP50_95

    gap = holdout_onnx.map50_95 - holdout_pt.map50_95
    parity = {
        "pt": round(holdout_pt.map50_95, 4),
        "onnx": round(holdout_onnx.map50_95, 4),
        "gap": round(gap, 4),
    }
    return {
        SOURCE: "adopted",
        ADOPT_ORIGIN: run.origin,
        ADOPT_SHA256: run.sha256,
        ADOPT_ARCHITECTURE: info.architecture,
        ADOPT_ULTRALYTICS: info.ultralytics_version,
        ADOPT_SAVED_AT: info.saved_at,
        ADOPT_IMGSZ_FROM: info.imgsz_from,
        ADOPT_ONNX: _onnx_from(onnx),
        ADOPT_DATASET: _short_json({"data": data.dataset, "holdout": data.holdout}),
        ADOPT_PARITY: json.dumps(parity),
        HOLDOUT_ONNX_MAP50_95: f"{holdout_onnx.map50_95:.4f}",
    }


def _short_json(d: dict, limit: int = 4900) -> str:
    """JSON within MLflow's tag limit: the notes go first when it is too long."""
    text = json.dumps(d)
    if len(text) > limit:
        text = json.dumps({k: {**v, "notes": v.get("notes", [])[:2]} for k, v in d.items()})
    return text if len(text) <= limit else json.dumps({k: {**v, "notes": []} for k, v in d.items()})


def adoption_report(version, run: AdoptRun, info: CheckpointInfo, data, dataset, holdout,
                    holdout_pt, holdout_onnx) -> str:  # fmt: skip
    q = data.dataset["quarantined"] + data.holdout["quarantined"]
    lines = [
        f"# Adopted champion: version {version}",
        "",
        "| what | value |",
        "|---|---|",
        f"| checkpoint | `{run.origin}` (sha256 `{run.sha256[:16]}…`, {info.size_bytes / 1e6:.1f} MB) |",
        f"| architecture | {info.architecture}, {info.parameters / 1e6:.2f} M parameters, "
        f"written by ultralytics {info.ultralytics_version} on {info.saved_at} |",
        f"| classes (schema-v1) | {', '.join(info.classes)} |",
        f"| imgsz | {info.imgsz} (from the {info.imgsz_from}) |",
        f"| dataset | {dataset.name}: {data.train_frames} train / {data.val_frames} val frames "
        f"from {data.dataset['format']} `{data.dataset['origin']}` |",
        f"| holdout | {holdout.name}: {data.holdout_frames} frames ({data.holdout['origin']}) |",
        f"| quarantined | {q} frames (report: `{data.report_key}` in the frame store) |",
        f"| holdout mAP50-95 .pt / ONNX | {holdout_pt.map50_95:.3f} / {holdout_onnx.map50_95:.3f} |",
        "",
        "| class | AP50-95 | AP50 |",
        "|---|---|---|",
    ]
    for cls, ap in holdout_pt.per_class_ap50_95.items():
        lines.append(f"| {cls} | {ap:.3f} | {holdout_pt.per_class_ap50.get(cls, 0):.3f} |")
    notes = data.dataset.get("notes", []) + data.holdout.get("notes", [])
    if notes:
        lines += ["", "Notes:", *[f"- {n}" for n in notes[:20]]]
    return "\n".join(lines) + "\n"

"""Quarterly holdout refresh (runbook, "The shape of a quarter"): a fresh sample of the last
quarter's production frames, labeled in Label Studio, validated, versioned as the next
holdout version (the previous ones stay tagged), checked for leakage against every training
version, and the champion re-scored on the old and the new holdout so that the trend goes
on across the switch."""

from __future__ import annotations

import datetime as dt
import io
import json
from dataclasses import dataclass
from pathlib import Path

from cvloop.core.errors import CvloopError
from registry.names import (
    CHAMPION_VERSION,
    HOLDOUT_CAMERAS,
    HOLDOUT_PREVIOUS,
    HOLDOUT_REFERENCE_MAP50_95,
    HOLDOUT_REFERENCE_PER_CLASS,
    HOLDOUT_REFERENCE_RESCORED,
    HOLDOUT_REFERENCE_VERSION,
)

RUNS = "runs/holdout-refresh"

HOLDOUT_EXPERIMENT = "cvloop-holdout"


@dataclass(frozen=True)
class RefreshSample:
    selected_key: str
    holdout_version: str  # the version these frames will become, e.g. holdout-v4
    summary: dict


@dataclass(frozen=True)
class HoldoutScore:
    holdout_version: str
    champion: str | None
    map50_95: float | None
    map50: float | None
    per_class_ap50_95: dict


def training_versions() -> dict[str, list]:
    """The manifest of every training version (each ``dataset-v*`` tag), read from the data
    repo at the tag (DVC: local cache, else the remote). A holdout frame must be in none."""
    import dvc.api
    import yaml

    from cvloop.adapters.versioning import REMOTE_NAME
    from cvloop.core.frames import FrameEntry
    from cvloop.stages.data import DATASET_DIR, DATASET_POINTER, data_repo

    repo = data_repo()
    repo.ensure()
    by_md5: dict[str, list] = {}
    out = {}
    for tag in repo.tags("dataset-v*"):
        pointer = repo.git("show", f"{tag}:{DATASET_POINTER}", check=False)
        if not pointer:
            continue
        md5 = yaml.safe_load(pointer)["outs"][0]["md5"]
        if md5 not in by_md5:
            try:
                text = dvc.api.read(
                    f"{DATASET_DIR}/manifest.jsonl", repo=str(repo.root), rev=tag,
                    remote=REMOTE_NAME, mode="r",
                )  # fmt: skip
            except Exception as exc:
                raise CvloopError(
                    f"the manifest of training version {tag} could not be read: {exc}",
                    fix="check the DVC remote (CVLOOP_DVC_REMOTE): every training version "
                    "must be readable to check the holdout for leakage",
                ) from None
            by_md5[md5] = [FrameEntry(**json.loads(x)) for x in text.splitlines() if x.strip()]
        out[tag] = by_md5[md5]
    return out


def sample_for_refresh(
    run_id: str,
    collected_key: str,
    frames: int,
    min_frames: int,
    max_frames: int,
    near_dup_bits: int,
    seed: str,
    pf,
) -> RefreshSample:
    """Spread ``frames`` (within the holdout's bounds) over camera x month x part of day;
    leave out frames any training version or the current holdout holds, and near-duplicates
    of training frames; pre-annotate with the champion; write ``selected.parquet``."""
    import numpy as np
    import pyarrow.parquet as pq

    from cvloop.adapters.datasets import read_manifest
    from cvloop.adapters.detector import OnnxDetector, decode_jpeg
    from cvloop.adapters.storage import open_storage
    from cvloop.adapters.versioning import next_version
    from cvloop.core.frames import _distances, dhash
    from cvloop.core.holdout import refresh_target, stratified_sample
    from cvloop.core.selection import Selected
    from cvloop.stages.collect import read_frame
    from cvloop.stages.data import HOLDOUT_DIR, HOLDOUT_POINTER, data_repo
    from cvloop.stages.prefilter import score_frames, to_parquet
    from registry.models import ModelRegistry
    from registry.names import CHAMPION

    store = open_storage()
    repo = data_repo()
    repo.checkout([HOLDOUT_POINTER])
    versions = training_versions()
    training = [e for entries in versions.values() for e in entries]
    taken = {e.sha256 for e in training} | {
        e.sha256 for e in read_manifest(repo.root / HOLDOUT_DIR)
    }
    train_hashes = np.array(sorted({int(e.dhash, 16) for e in training}), dtype=np.uint64)
    collected = pq.read_table(io.BytesIO(store.get_bytes(collected_key))).to_pylist()
    pool = [r for r in collected if r["sha256"] not in taken]
    target = refresh_target(frames, min_frames, max_frames)
    near: set[str] = set()
    images: dict[str, bytes] = {}
    for _ in range(4):  # a near-duplicate of a training frame is replaced by the next pick
        sample = stratified_sample([r for r in pool if r["key"] not in near], target, seed)
        fresh = [r for r in sample.rows if r["key"] not in images]
        for r in fresh:
            data = read_frame(store, r["key"])
            images[r["key"]] = data
            h = dhash(decode_jpeg(data))
            if len(train_hashes) and int(_distances(train_hashes, h).min()) <= near_dup_bits:
                near.add(r["key"])
        if not any(r["key"] in near for r in sample.rows):
            break
    rows = [r for r in sample.rows if r["key"] not in near]
    if len(rows) < min_frames:
        raise CvloopError(
            f"the last quarter's frames give {len(rows)} new holdout frames, fewer than "
            f"holdout.min_frames ({min_frames}): {len(collected)} collected, "
            f"{len(collected) - len(pool)} already labeled, {len(near)} near-duplicates of "
            "training frames",
            fix="refresh over a longer window (--days), or lower holdout.min_frames in "
            "params.yaml if the fleet is small",
        )
    model = ModelRegistry.from_settings().fetch_alias(CHAMPION)
    detector = OnnxDetector(model.onnx, model.classes, model.imgsz)
    why = {r["key"]: r["why"] for r in rows}
    scored = score_frames(
        ((r["key"], r["camera"], int(r["ts_ms"]), images[r["key"]]) for r in rows),
        detector, conf=pf.conf, low=pf.low_confidence, high=pf.high_confidence,
        many=pf.many_detections, batch_size=pf.batch_size,
    )  # fmt: skip
    chosen = [
        Selected(s.key, s.camera, s.ts_ms, 1.0, why[s.key], s.labels, s.detections) for s in scored
    ]
    base = f"{RUNS}/{run_id}"
    store.put_bytes(f"{base}/selected.parquet", to_parquet(chosen))
    kept = {k: n for k, n in sample.strata.items() if n}
    summary = {
        "collected": len(collected),
        "already_labeled": len(collected) - len(pool),
        "near_duplicates_of_training": len(near),
        "target": target,
        "selected": len(chosen),
        "cameras": sorted({c.camera for c in chosen}),
        "strata": kept,
        "training_versions_checked": sorted(versions),
    }
    version = f"holdout-v{next_version(repo, 'holdout')}"
    store.put_text(f"{base}/sample-summary.json", json.dumps(summary, indent=2))
    return RefreshSample(f"{base}/selected.parquet", version, summary)


def score_champion_on_holdout(
    label: str, work_dir: str, imgsz: int, device: str = "auto"
) -> HoldoutScore:
    """The champion's mAP on the holdout as it is in the data repo now (after a schema
    change: on a view of the same frames in the champion's own classes, per-class results
    under today's names)."""
    from cvloop.adapters.eval_sets import class_view
    from cvloop.adapters.training import evaluate
    from cvloop.stages.data import HOLDOUT_DIR, HOLDOUT_POINTER, data_repo
    from cvloop.stages.evaluate import _champion_view
    from cvloop.stages.schema import current_schema
    from registry.models import ModelRegistry
    from registry.names import CHAMPION

    repo = data_repo()
    repo.checkout([HOLDOUT_POINTER])
    root = repo.root / HOLDOUT_DIR
    version = (root / "VERSION").read_text().strip() if (root / "VERSION").exists() else "none"
    reg = ModelRegistry.from_settings()
    champion = reg.alias_version(CHAMPION)
    if champion is None or not (root / "data.yaml").exists():
        return HoldoutScore(version, champion, None, None, {})
    model = reg.fetch(champion)
    data_yaml = root / "data.yaml"
    classes = list(current_schema().classes)
    view, renamed = _champion_view(model, classes)
    if view is not None:
        data_yaml = class_view(root, Path(work_dir) / f"view-{label}", list(model.classes), view)
    r = evaluate(
        model.pt, data_yaml, imgsz=model.imgsz or imgsz, device=device,
        out_dir=Path(work_dir), name=f"champion-{label}",
    )  # fmt: skip
    per_class = dict(r.per_class_ap50_95)
    if renamed is not None:
        per_class = {renamed[c]: v for c, v in per_class.items() if c in renamed}
    return HoldoutScore(version, champion, r.map50_95, r.map50, per_class)


def version_refreshed_holdout(
    validated,
    holdout_version: str,
    classes: list[str],
    label_policy_version: int,
    *,
    min_frames: int,
    max_frames: int,
    near_dup_bits: int,
    window: str,
) -> dict:
    """The labeled, valid frames become the whole of the next holdout version (previous
    versions stay tagged in git and on the DVC remote). Refused, with nothing written, when
    fewer than ``min_frames`` are valid or a frame is in any training version.

    Idempotent: the new folder is built beside the old one and swapped in by renames; a
    re-run finds the version written (or tagged) and does not write it again."""
    import shutil

    from cvloop.adapters.datasets import add_frames, mark_folder, read_manifest
    from cvloop.adapters.detector import decode_jpeg
    from cvloop.adapters.storage import open_storage
    from cvloop.adapters.versioning import next_version
    from cvloop.core.frames import LabelBox as Box
    from cvloop.core.frames import NewFrame, check_overlap, dhash
    from cvloop.core.schema import SCHEMA_FILE
    from cvloop.stages.data import HOLDOUT_DIR, HOLDOUT_POINTER, data_repo
    from cvloop.stages.dataset import _entry, _read_reviewed
    from cvloop.stages.schema import current_schema

    store = open_storage()
    repo = data_repo()
    repo.ensure()
    repo.checkout([HOLDOUT_POINTER])
    root = repo.root / HOLDOUT_DIR
    schema = current_schema()
    if list(classes) != list(schema.classes):
        raise CvloopError(
            f"the classes {list(classes)} are not the current schema's ({schema.tag})",
            fix="the schema changed while the frames were labeled: run the refresh again",
        )
    previous = (root / "VERSION").read_text().strip() if (root / "VERSION").exists() else None
    if previous == holdout_version and holdout_version in repo.tags("holdout-v*"):
        info = repo.pointer_info(HOLDOUT_POINTER)
        return {"name": holdout_version, "frames": len(read_manifest(root)),
                "previous": None, "dvc_md5": info["md5"], "already": True}  # fmt: skip
    if holdout_version in repo.tags("holdout-v*") and previous != holdout_version:
        # a retrain took this name while the frames were labeled: the next free one
        holdout_version = f"holdout-v{next_version(repo, 'holdout')}"
    rows = {r["sha256"]: r for r in _read_reviewed(store, validated.reviewed_key)}
    valid = [rows[s] for s in validated.valid if s in rows][:max_frames]
    if len(valid) < min_frames:
        raise CvloopError(
            f"{len(valid)} labeled frames passed validation, fewer than holdout.min_frames "
            f"({min_frames}); {validated.summary.get('quarantined', 0)} are quarantined",
            fix="nothing was versioned: label the remaining frames (or fix the quarantined "
            "ones, see the annotation-quarantine artifact) in the Label Studio project, then "
            "run the refresh again; labeled frames are kept",
        )
    images = {r["sha256"]: store.get_bytes(r["image_key"]) for r in valid}
    pixels = {sha: decode_jpeg(b) for sha, b in images.items()}
    new_entries = [_entry(s, f"{dhash(pixels[s]):016x}") for s in images]
    leaks = []
    for tag, entries in training_versions().items():
        overlap = check_overlap(new_entries, entries, near_dup_bits)
        if not overlap.clean:
            leaks.append(f"{tag}: {len(overlap.exact)} identical, {len(overlap.near)} near")
    if leaks:
        raise CvloopError(
            f"holdout leakage: frames of the refresh are in training versions ({'; '.join(leaks)})",
            fix="nothing was versioned; the sample leaves out labeled frames, so a training "
            "version changed during the labeling: run the refresh again",
        )
    frames = [
        NewFrame(
            image=images[r["sha256"]],
            boxes=[Box(**b) for b in r["final"]],
            source_key=r["key"],
            camera=r["camera"],
            ts_ms=int(r["ts_ms"]),
            split="holdout",
            label_source="reviewed",
            why_selected=r["why"],
            slice_tags=r.get("slice_tags") or [],
            edits=r.get("edits") or {},
            pixels=pixels[r["sha256"]],
        )
        for r in valid
    ]
    staging = root.with_name(f"{root.name}.{holdout_version}")
    if staging.exists():
        shutil.rmtree(staging)
    add_frames(staging, frames, classes, holdout_version, label_policy_version)
    mark_folder(staging, schema)
    old = root.with_name(f"{root.name}.previous")
    if old.exists():
        shutil.rmtree(old)
    if root.exists():
        root.rename(old)
    staging.rename(root)
    if old.exists():
        shutil.rmtree(old)
    repo.add(HOLDOUT_DIR)
    cams = sorted({f.camera for f in frames})
    rec = repo.commit_version(
        holdout_version,
        [HOLDOUT_POINTER],
        f"{holdout_version}: quarterly refresh, {len(frames)} frames from {window} across "
        f"{len(cams)} cameras ({schema.tag}; replaces {previous or 'none'})",
        files=(SCHEMA_FILE,) if (repo.root / SCHEMA_FILE).exists() else (),
    )
    return {"name": rec.name, "frames": len(frames), "previous": previous,
            "dvc_md5": rec.dvc_md5, "git_rev": rec.git_rev, "cameras": cams,
            "already": False}  # fmt: skip


def record_refresh(
    before: HoldoutScore, after: HoldoutScore, version: dict, sample: RefreshSample
) -> dict:
    """Both scores of the champion in MLflow (experiment ``cvloop-holdout``: one run per
    refresh), and on the champion's model version the reference the monitor compares the
    weekly holdout mAP with (``cvloop.holdout.reference.*``: the new holdout's score), so
    the trend goes on across the switch without a false drop or rise."""
    from mlflow import MlflowClient

    from cvloop.config.settings import load_settings
    from registry.models import ModelRegistry

    client = MlflowClient(load_settings().mlflow_tracking_uri)
    exp = client.get_experiment_by_name(HOLDOUT_EXPERIMENT)
    exp_id = exp.experiment_id if exp else client.create_experiment(HOLDOUT_EXPERIMENT)
    name = f"refresh-{version['name']}"
    existing = client.search_runs([exp_id], f"tags.mlflow.runName = '{name}'", max_results=1)
    run = existing[0] if existing else client.create_run(
        exp_id, run_name=name, tags={
            "cvloop.holdout.version": version["name"],
            HOLDOUT_PREVIOUS: str(before.holdout_version),
            CHAMPION_VERSION: str(after.champion),
            HOLDOUT_CAMERAS: ",".join(version.get("cameras") or []),
        })  # fmt: skip
    run_id = run.info.run_id
    for who, s in (("previous", before), ("new", after)):
        if s.map50_95 is not None:
            client.log_metric(run_id, f"{who}.map50_95", s.map50_95)
            client.log_metric(run_id, f"{who}.map50", s.map50 or 0.0)
            for c, v in s.per_class_ap50_95.items():
                client.log_metric(run_id, f"{who}.ap50_95.{c}", v)
    client.log_metric(run_id, "frames", version["frames"])
    client.log_text(run_id, json.dumps(sample.summary, indent=2), "sample-summary.json")
    client.set_terminated(run_id)
    if after.champion and after.map50_95 is not None:
        ModelRegistry.from_settings().set_tags(
            after.champion,
            {
                HOLDOUT_REFERENCE_VERSION: version["name"],
                HOLDOUT_REFERENCE_MAP50_95: f"{after.map50_95:.6f}",
                HOLDOUT_REFERENCE_PER_CLASS: json.dumps(
                    {c: round(v, 6) for c, v in after.per_class_ap50_95.items()}
                ),
                HOLDOUT_REFERENCE_RESCORED: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            },
        )
    out = {
        "holdout_version": version["name"],
        "previous_version": before.holdout_version,
        "frames": version["frames"],
        "champion": after.champion,
        "champion_map50_95_previous": before.map50_95,
        "champion_map50_95_new": after.map50_95,
        "mlflow_run_id": run_id,
    }
    from cvloop.adapters.storage import open_storage

    open_storage().put_text(
        sample.selected_key.rsplit("/", 1)[0] + "/refresh.json", json.dumps(out, indent=2)
    )
    return out

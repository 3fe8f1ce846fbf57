"""Quarterly holdout refresh (runbook, "The shape of a quarter"): a fresh sample of the last
quarter's production frames, labeled in Label Studio, validated, versioned as the next
holdout version (the previous ones stay tagged), checked for leakage against every training
version, and the champion re-scored on the old and the new holdout so that the trend goes
on across the switch."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cvloop.core.errors import CvloopError
from cvloop.stages.repo_lease import writes_data_repo
from registry.names import (
    CHAMPION_VERSION,
    HOLDOUT_CAMERAS,
    HOLDOUT_PREVIOUS,
    HOLDOUT_REFERENCE_MAP50_95,
    HOLDOUT_REFERENCE_PER_CLASS,
    HOLDOUT_REFERENCE_RESCORED,
    HOLDOUT_REFERENCE_VERSION,
    HOLDOUT_VERSION,
)

if TYPE_CHECKING:
    from cvloop.config.params import HoldoutParams, PrefilterParams
    from cvloop.context import Context
    from cvloop.stages.model import ChampionRef

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


def training_versions(ctx: Context) -> dict[str, list]:
    """The manifest of every training version (each ``dataset-v*`` tag), read from the data
    repo at the tag (DVC: local cache, else the remote). A holdout frame must be in none."""
    import dvc.api
    import yaml

    from cvloop.adapters.versioning import DATASET_DIR, DATASET_POINTER, REMOTE_NAME
    from cvloop.core.frames import FrameEntry

    repo = ctx.data_repo
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
    ctx: Context,
    run_id: str,
    collected_key: str,
    champion: ChampionRef,
    hp: HoldoutParams,
    pf: PrefilterParams,
    seed: str,
    frames: int | None = None,
) -> RefreshSample:
    """Spread ``frames`` (default ``hp.refresh_frames``, within ``hp.min_frames`` ..
    ``hp.max_frames``) over camera x month x part of day;
    leave out frames any training version or the current holdout holds, and near-duplicates
    of training frames; pre-annotate with the champion; write ``selected.parquet``."""
    import numpy as np

    from cvloop.adapters.datasets import read_manifest
    from cvloop.adapters.detector import OnnxDetector, decode_jpeg
    from cvloop.adapters.frame_keys import read_frame
    from cvloop.adapters.parquet import read_parquet
    from cvloop.adapters.versioning import HOLDOUT_DIR, HOLDOUT_POINTER, next_version
    from cvloop.core.frames import _distances, capture_events, dhash
    from cvloop.core.holdout import refresh_target, stratified_sample
    from cvloop.core.selection import Selected
    from cvloop.stages.prefilter import score_frames, to_parquet

    min_frames, near_dup_bits = hp.min_frames, hp.near_duplicate_hamming
    store = ctx.store
    repo = ctx.data_repo
    repo.checkout([HOLDOUT_POINTER])
    versions = training_versions(ctx)
    training = [e for entries in versions.values() for e in entries]
    taken = {e.sha256 for e in training} | {
        e.sha256 for e in read_manifest(repo.root / HOLDOUT_DIR)
    }
    train_hashes = np.array(sorted({int(e.dhash, 16) for e in training}), dtype=np.uint64)
    collected = read_parquet(store.get_bytes(collected_key)).to_pylist()
    pool = [r for r in collected if r["sha256"] not in taken]
    # a frame of a capture event the model trained on is as good as seen: left out
    events = capture_events([(e.sha256, e.camera, e.ts_ms) for e in training]
                            + [(r["sha256"], r["camera"], int(r["ts_ms"])) for r in pool],
                            int(hp.capture_event_seconds * 1000))  # fmt: skip
    trained_events = {events[e.sha256] for e in training}
    same_event = {r["sha256"] for r in pool if events[r["sha256"]] in trained_events}
    pool = [r for r in pool if r["sha256"] not in same_event]
    target = refresh_target(frames or hp.refresh_frames, min_frames, hp.max_frames)
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
            f"{len(collected) - len(pool) - len(same_event)} already labeled, {len(near)} "
            f"near-duplicates of training frames, {len(same_event)} of a capture event the "
            "model trained on",
            fix="refresh over a longer window (--days), or lower holdout.min_frames in "
            "params.yaml if the fleet is small",
        )
    detector = OnnxDetector(champion.onnx, champion.classes, champion.imgsz)
    why = {r["key"]: r["why"] for r in rows}
    scored = score_frames(
        ((r["key"], r["camera"], int(r["ts_ms"]), images[r["key"]]) for r in rows),
        detector, pf,
    )  # fmt: skip
    chosen = [
        Selected(s.key, s.camera, s.ts_ms, 1.0, why[s.key], s.labels, s.detections) for s in scored
    ]
    base = f"{RUNS}/{run_id}"
    store.put_bytes(f"{base}/selected.parquet", to_parquet(chosen))
    kept = {k: n for k, n in sample.strata.items() if n}
    summary = {
        "collected": len(collected),
        "already_labeled": len(collected) - len(pool) - len(same_event),
        "near_duplicates_of_training": len(near),
        "same_event_as_training": len(same_event),
        "target": target,
        "selected": len(chosen),
        "cameras": sorted({c.camera for c in chosen}),
        "strata": kept,
        "training_versions_checked": sorted(versions),
    }
    version = f"holdout-v{next_version(repo, 'holdout')}"
    store.put_text(f"{base}/sample-summary.json", json.dumps(summary, indent=2))
    return RefreshSample(f"{base}/selected.parquet", version, summary)


def refresh_work_dir(ctx: Context, run_id: str) -> str:
    """Where a refresh run evaluates (under the cvloop home's training folder)."""
    return str(ctx.settings.home / "training" / "holdout-refresh" / run_id)


def score_champion_on_holdout(
    ctx: Context, label: str, champion: ChampionRef, work_dir: str, device: str = "auto"
) -> HoldoutScore:
    """The champion's mAP on the holdout as it is in the data repo now (after a schema
    change: on a view of the same frames in the champion's own classes, per-class results
    under today's names)."""
    from cvloop.adapters.eval_sets import class_view
    from cvloop.adapters.training import evaluate
    from cvloop.adapters.versioning import HOLDOUT_DIR, HOLDOUT_POINTER
    from cvloop.stages.evaluate import _champion_view
    from cvloop.stages.schema import current_schema

    repo = ctx.data_repo
    repo.checkout([HOLDOUT_POINTER])
    root = repo.root / HOLDOUT_DIR
    version = (root / "VERSION").read_text().strip() if (root / "VERSION").exists() else "none"
    if not (root / "data.yaml").exists():
        return HoldoutScore(version, champion.version, None, None, {})
    model = champion
    data_yaml = root / "data.yaml"
    classes = list(current_schema(ctx).classes)
    view, renamed = _champion_view(ctx, model, classes)
    if view is not None:
        data_yaml = class_view(root, Path(work_dir) / f"view-{label}", list(model.classes), view)
    r = evaluate(
        model.pt, data_yaml, imgsz=model.imgsz, device=device,
        out_dir=Path(work_dir), name=f"champion-{label}",
    )  # fmt: skip
    per_class = dict(r.per_class_ap50_95)
    if renamed is not None:
        per_class = {renamed[c]: v for c, v in per_class.items() if c in renamed}
    return HoldoutScore(version, champion.version, r.map50_95, r.map50, per_class)


@writes_data_repo("the holdout refresh")
def version_refreshed_holdout(
    ctx: Context,
    validated,
    holdout_version: str,
    classes: list[str],
    label_policy_version: int,
    hp: HoldoutParams,
    window: str,
) -> dict:
    """The labeled, valid frames become the whole of the next holdout version (previous
    versions stay tagged in git and on the DVC remote). Refused, with nothing written, when
    fewer than ``min_frames`` are valid or a frame is in any training version.

    Idempotent: the new folder is built beside the old one and swapped in by renames; a
    re-run finds the version written (or tagged) and does not write it again."""
    import shutil

    from cvloop.adapters.datasets import (
        add_frames,
        add_retired,
        mark_folder,
        read_manifest,
        read_retired,
    )
    from cvloop.adapters.versioning import HOLDOUT_DIR, HOLDOUT_POINTER, next_version
    from cvloop.core.schema import SCHEMA_FILE
    from cvloop.stages.versioning import ReviewedFrames, commit_folder, open_repo, refuse_leakage

    store = ctx.store
    repo, schema = open_repo(ctx, classes, [HOLDOUT_POINTER])
    root = repo.root / HOLDOUT_DIR
    previous = (root / "VERSION").read_text().strip() if (root / "VERSION").exists() else None
    if previous == holdout_version and holdout_version in repo.tags("holdout-v*"):
        info = repo.pointer_info(HOLDOUT_POINTER)
        return {"name": holdout_version, "frames": len(read_manifest(root)),
                "previous": None, "dvc_md5": info["md5"], "already": True}  # fmt: skip
    if holdout_version in repo.tags("holdout-v*") and previous != holdout_version:
        # a retrain took this name while the frames were labeled: the next free one
        holdout_version = f"holdout-v{next_version(repo, 'holdout')}"
    frames = ReviewedFrames.read(store, validated.reviewed_key, validated.valid, hp.max_frames)
    if len(frames.rows) < hp.min_frames:
        raise CvloopError(
            f"{len(frames.rows)} labeled frames passed validation, fewer than "
            f"holdout.min_frames ({hp.min_frames}); {validated.summary.get('quarantined', 0)} "
            "are quarantined",
            fix="nothing was versioned: label the remaining frames (or fix the quarantined "
            "ones, see the annotation-quarantine artifact) in the Label Studio project, then "
            "run the refresh again; labeled frames are kept",
        )
    new_entries = frames.entries(frames.rows)
    fix = ("nothing was versioned; the sample leaves out labeled frames, so a training "
           "version changed during the labeling: run the refresh again")  # fmt: skip
    for tag, entries in training_versions(ctx).items():
        refuse_leakage(new_entries, entries, hp.near_duplicate_hamming, fix,
                       what=f"frames of the refresh (vs {tag})",
                       event_gap_ms=int(hp.capture_event_seconds * 1000))  # fmt: skip
    new = (frames.new_frame(s, "holdout") for s in frames.rows)  # one frame at a time
    # the new folder is built beside the old one and swapped in by renames
    staging = root.with_name(f"{root.name}.{holdout_version}")
    if staging.exists():
        shutil.rmtree(staging)
    add_frames(staging, new, classes, holdout_version, label_policy_version)
    # the frames the refresh replaces, and those retired before, stay held out: a frame
    # that was ever in the holdout is never trained on
    if root.exists():
        fresh = {e.sha256 for e in read_manifest(staging)}
        add_retired(staging, [e for e in read_retired(root) + read_manifest(root)
                              if e.sha256 not in fresh], holdout_version)  # fmt: skip
    mark_folder(staging, schema)
    old = root.with_name(f"{root.name}.previous")
    if old.exists():
        shutil.rmtree(old)
    if root.exists():
        root.rename(old)
    staging.rename(root)
    if old.exists():
        shutil.rmtree(old)
    cams = sorted({r["camera"] for r in frames.rows.values()})
    rec = commit_folder(
        repo, HOLDOUT_DIR, HOLDOUT_POINTER, holdout_version,
        f"{holdout_version}: quarterly refresh, {len(frames.rows)} frames from {window} across "
        f"{len(cams)} cameras ({schema.tag}; replaces {previous or 'none'})",
        files=(SCHEMA_FILE,) if (repo.root / SCHEMA_FILE).exists() else (),
    )  # fmt: skip
    return {"name": rec.name, "frames": len(frames.rows), "previous": previous,
            "dvc_md5": rec.dvc_md5, "git_rev": rec.git_rev, "cameras": cams,
            "already": False}  # fmt: skip


def record_refresh(
    ctx: Context, before: HoldoutScore, after: HoldoutScore, version: dict, sample: RefreshSample
) -> dict:
    """Both scores of the champion in MLflow (experiment ``cvloop-holdout``: one run per
    refresh), and on the champion's model version the reference the monitor compares the
    weekly holdout mAP with (``cvloop.holdout.reference.*``: the new holdout's score), so
    the trend goes on across the switch without a false drop or rise."""
    t = ctx.tracker
    name = f"refresh-{version['name']}"
    existing = t.find_runs(HOLDOUT_EXPERIMENT, name=name, max_results=1)
    run_id = existing[0].run_id if existing else t.start_run(
        HOLDOUT_EXPERIMENT, name, None, {
            HOLDOUT_VERSION: version["name"],
            HOLDOUT_PREVIOUS: str(before.holdout_version),
            CHAMPION_VERSION: str(after.champion),
            HOLDOUT_CAMERAS: ",".join(version.get("cameras") or []),
        })  # fmt: skip
    metrics = {"frames": version["frames"]}
    for who, sc in (("previous", before), ("new", after)):
        if sc.map50_95 is not None:
            metrics |= {f"{who}.map50_95": sc.map50_95, f"{who}.map50": sc.map50 or 0.0}
            metrics |= {f"{who}.ap50_95.{c}": v for c, v in sc.per_class_ap50_95.items()}
    t.log_metrics(run_id, metrics)
    t.log_text(run_id, json.dumps(sample.summary, indent=2), "sample-summary.json")
    t.finish(run_id)
    if after.champion and after.map50_95 is not None:
        ctx.registry.set_tags(
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

    ctx.store.put_text(
        sample.selected_key.rsplit("/", 1)[0] + "/refresh.json", json.dumps(out, indent=2)
    )
    return out

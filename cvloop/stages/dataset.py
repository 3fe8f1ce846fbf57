"""Dataset stage (runbook steps 5 and 9): reviewed annotations out of Label Studio, checked
(Great Expectations), merged into dataset v_n+1 and holdout v_k+1, versioned with DVC."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

from cvloop.core.frames import LabelBox
from cvloop.stages.annotate import ReviewQueue

REVIEWED = "reviewed.jsonl"

QUARANTINE = "annotation-quarantine.json"


@dataclass(frozen=True)
class ReviewedExport:
    key: str  # runs/retrain/<id>/reviewed.jsonl
    frames: int


@dataclass(frozen=True)
class ValidatedReviews:
    reviewed_key: str
    valid: list[str]  # content hashes
    quarantine_key: str
    summary: dict


@dataclass(frozen=True)
class NewVersions:
    dataset: dict  # VersionRecord as a dict
    holdout: dict | None
    added: dict  # split -> frames added
    held_back: int
    already_present: int
    manifest_key: str
    dataset_yaml: str = ""  # datasets/data.yaml in the data repo
    holdout_dir: str = ""  # holdout/data in the data repo


def export_reviews(
    queue: ReviewQueue, iou_match: float, moved_iou: float, drift_classes: list[str]
) -> ReviewedExport:
    """Every submitted annotation, with its pre-annotation and edit counts, to
    ``reviewed.jsonl`` in the run's folder (the dataset is built from this file)."""
    from cvloop.adapters.labelstudio import LabelStudioQueue
    from cvloop.adapters.storage import open_storage
    from cvloop.core.review import compare_boxes, frame_edits
    from cvloop.stages.schema import schema_log

    _total, reviewed = LabelStudioQueue.from_settings().reviewed(queue.project_id)
    # boxes drawn under an earlier schema version (the schema changed during the review)
    # follow it: renamed and merged classes get today's names, dropped classes go
    translate = schema_log().translate()
    lines = []
    for r in reviewed:
        r = replace(
            r,
            final=_translated(r.final, translate),
            predicted=_translated(r.predicted, translate),
        )
        why = [w.strip() for w in str(r.data.get("why", "")).split(";") if w.strip()]
        tags = [w for w in why if w.startswith("drift:")]
        tags += [f"drift:class {b.label}" for b in r.final if b.label in drift_classes]
        lines.append(
            json.dumps(
                {
                    "sha256": r.sha256,
                    "task_id": r.task_id,
                    "key": r.data.get("key"),
                    "image_key": r.data.get("image_key") or r.data.get("key"),
                    "camera": r.data.get("camera"),
                    "ts_ms": r.data.get("ts_ms"),
                    "why": why,
                    "slice_tags": sorted(set(tags)),
                    "final": [asdict(b) for b in r.final],
                    "predicted": [asdict(b) for b in r.predicted],
                    "edits": frame_edits(compare_boxes(r.predicted, r.final, iou_match, moved_iou)),
                    "reviewed_at": r.completed_at,
                }
            )
        )
    key = f"{queue.run_base}/{REVIEWED}"
    open_storage().put_text(key, "\n".join(lines) + ("\n" if lines else ""))
    return ReviewedExport(key, len(lines))


def _translated(boxes: list[LabelBox], translate: dict[str, str | None]) -> list[LabelBox]:
    """Boxes with class names of the current schema (an unknown name stays: validation
    quarantines it with its rule)."""
    out = []
    for b in boxes:
        name = translate.get(b.label, b.label)
        if name is not None:
            out.append(b if name == b.label else replace(b, label=name))
    return out


def _read_reviewed(store, key: str) -> list[dict]:
    return [json.loads(line) for line in store.get_text(key).splitlines() if line]


def validate_reviews(
    export: ReviewedExport,
    classes: list[str],
    min_box_area: float,
    max_box_area: float,
    duplicate_iou: float,
) -> ValidatedReviews:
    """Run the annotation suite; frames that break a rule go to the quarantine report."""
    from cvloop.adapters.detector import decode_jpeg
    from cvloop.adapters.storage import open_storage
    from cvloop.core.validate import FrameToCheck, validate_annotations

    store = open_storage()
    rows = _read_reviewed(store, export.key)
    frames = []
    for row in rows:
        readable, width, height = True, 1, 1
        try:
            pixels = decode_jpeg(store.get_bytes(row["image_key"]))
            height, width = pixels.shape[:2]
        except Exception:  # missing or corrupt since review: the rule reports it
            readable = False
        frames.append(
            FrameToCheck(
                row["sha256"],
                row["key"],
                readable,
                width,
                height,
                [LabelBox(**b) for b in row["final"]],
            )
        )
    result = validate_annotations(
        frames,
        classes,
        min_box_area=min_box_area,
        max_box_area=max_box_area,
        duplicate_iou=duplicate_iou,
    )
    base = export.key.rsplit("/", 1)[0]
    qkey = f"{base}/{QUARANTINE}"
    store.put_text(qkey, json.dumps([asdict(v) for v in result.violations], indent=2))
    summary = {
        "reviewed": len(frames),
        "valid": len(result.valid),
        "quarantined": len(result.quarantined),
        "boxes_checked": result.rows,
        "rule_failures": {k: v for k, v in result.rule_failures.items() if v},
    }
    return ValidatedReviews(export.key, result.valid, qkey, summary)


def version_reviewed_data(
    validated: ValidatedReviews,
    dataset_version: str,
    classes: list[str],
    label_policy_version: int,
    *,
    holdout_quota: int,
    holdout_max_frames: int,
    holdout_max_drift_share: float,
    val_share: float,
    near_dup_bits: int,
) -> NewVersions:
    """Merge the valid reviewed frames into dataset v_n+1 (old frames stay) and, up to the
    quota, drift frames into holdout v_k+1; check for leakage; dvc add, commit, tag, push.

    Idempotent: frames already in a version are skipped, and a tag that already holds the
    same data is not made again, so a re-run after a crash ends in the same state.
    """
    from cvloop.adapters.datasets import add_frames, read_manifest
    from cvloop.adapters.detector import decode_jpeg
    from cvloop.adapters.storage import open_storage
    from cvloop.adapters.versioning import next_version
    from cvloop.core.errors import CvloopError
    from cvloop.core.frames import Candidate, NewFrame, check_overlap, dhash, plan_split
    from cvloop.stages.data import (
        DATASET_DIR,
        DATASET_POINTER,
        HOLDOUT_DIR,
        HOLDOUT_POINTER,
        data_repo,
    )
    from cvloop.stages.schema import current_schema, require_migrated

    store = open_storage()
    repo = data_repo()
    repo.ensure()
    repo.checkout([DATASET_POINTER, HOLDOUT_POINTER])
    ds_root, ho_root = repo.root / DATASET_DIR, repo.root / HOLDOUT_DIR
    schema = current_schema()
    if list(classes) != list(schema.classes):
        raise CvloopError(
            f"the classes {list(classes)} are not the current schema's ({schema.tag}: "
            f"{list(schema.classes)})",
            fix="the schema changed after this run read it: run the step again",
        )
    require_migrated(ds_root, schema)
    require_migrated(ho_root, schema)
    training, holdout = read_manifest(ds_root), read_manifest(ho_root)
    rows = {r["sha256"]: r for r in _read_reviewed(store, validated.reviewed_key)}
    if (repo.tag_message(dataset_version) or "").startswith("cvloop schema-v"):
        # a schema change took this name while the frames were in review: the next free
        # one (or the one a crashed run of this step already wrote these frames under)
        mine = {e.added_in for e in training if e.sha256 in rows}
        last = (ds_root / "VERSION").read_text().strip()
        reuse = last in mine and not (repo.tag_message(last) or "").startswith("cvloop schema")
        dataset_version = last if reuse else f"dataset-v{next_version(repo, 'dataset')}"
    valid = [rows[s] for s in validated.valid if s in rows]
    images = {r["sha256"]: store.get_bytes(r["image_key"]) for r in valid}  # read once
    pixels = {sha: decode_jpeg(data) for sha, data in images.items()}
    candidates = [
        Candidate(
            r["sha256"],
            f"{dhash(pixels[r['sha256']]):016x}",
            any(t.startswith("drift:") for t in r["slice_tags"]),
        )
        for r in valid
    ]
    dhashes = {c.sha256: c.dhash for c in candidates}
    quota = max(0, min(holdout_quota, holdout_max_frames - len(holdout)))
    plan = plan_split(
        candidates,
        training=training,
        holdout=holdout,
        holdout_quota=quota,
        val_share=val_share,
        near_dup_bits=near_dup_bits,
        max_drift_share=holdout_max_drift_share,
    )

    def new_frame(sha: str, split: str) -> NewFrame:
        r = rows[sha]
        return NewFrame(
            image=images[sha],
            boxes=[LabelBox(**b) for b in r["final"]],
            source_key=r["key"],
            camera=r["camera"],
            ts_ms=int(r["ts_ms"]),
            split=split,
            label_source="reviewed",
            why_selected=r["why"],
            slice_tags=r["slice_tags"],
            edits=r["edits"],
            pixels=pixels[sha],
        )

    holdout_version = f"holdout-v{next_version(repo, 'holdout')}" if plan.holdout else None
    pending = (ho_root / "VERSION").read_text().strip() if (ho_root / "VERSION").exists() else ""
    if not holdout_version and pending and pending not in repo.tags("holdout-v*"):
        holdout_version = pending  # a crash left frames added to the holdout but untagged
    # leakage check on what the versions *will* hold, before anything is written
    future_train = training + [_entry(sha, dhashes[sha]) for sha in plan.train + plan.val]
    future_holdout = holdout + [_entry(sha, dhashes[sha]) for sha in plan.holdout]
    overlap = check_overlap(future_holdout, future_train, near_dup_bits)
    if not overlap.clean:
        raise CvloopError(
            f"holdout leakage: {len(overlap.exact)} holdout frames are in the training data "
            f"and {len(overlap.near)} nearly duplicate a training frame "
            f"(first: {(overlap.exact or [n[0] for n in overlap.near])[:5]})",
            fix="nothing was versioned; inspect the frames, then refresh the holdout "
            "(runbooks/review.md, step 9)",
        )
    frames = [new_frame(s, "train") for s in plan.train] + [new_frame(s, "val") for s in plan.val]
    added = {"train": len(plan.train), "val": len(plan.val), "holdout": 0}
    add_frames(ds_root, frames, classes, dataset_version, label_policy_version)
    repo.add(DATASET_DIR)
    n_new = len(frames)
    dataset = repo.commit_version(
        dataset_version,
        [DATASET_POINTER],
        f"{dataset_version}: +{n_new} reviewed frames ({len(plan.already_present)} already in)",
    )
    holdout_rec = None
    if holdout_version:
        add_frames(
            ho_root,
            [new_frame(s, "holdout") for s in plan.holdout],
            classes,
            holdout_version,
            label_policy_version,
        )
        added["holdout"] = sum(e.added_in == holdout_version for e in read_manifest(ho_root))
        repo.add(HOLDOUT_DIR)
        holdout_rec = asdict(
            repo.commit_version(
                holdout_version,
                [HOLDOUT_POINTER],
                f"{holdout_version}: +{added['holdout']} reviewed drift frames",
            )
        )
    base = validated.reviewed_key.rsplit("/", 1)[0]
    out = NewVersions(
        asdict(dataset),
        holdout_rec,
        added,
        len(plan.held_back),
        len(plan.already_present),
        f"{base}/versions.json",
        str(ds_root / "data.yaml"),
        str(ho_root),
    )
    store.put_text(out.manifest_key, json.dumps(asdict(out), indent=2))
    return out


def _entry(sha: str, dhash_hex: str):
    """Just enough of a manifest entry for the leakage check."""
    from cvloop.core.frames import FrameEntry

    return FrameEntry(
        id=sha[:20], sha256=sha, split="", source_key="", camera="", ts_ms=0,
        dhash=dhash_hex, boxes=0, label_source="", label_policy_version=0, added_in="",
    )  # fmt: skip

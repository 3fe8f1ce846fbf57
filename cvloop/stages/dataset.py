"""Dataset stage (runbook steps 5 and 9): reviewed annotations out of Label Studio, checked
(Great Expectations), merged into dataset v_n+1 and holdout v_k+1, versioned with DVC."""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

from cvloop.core import slices
from cvloop.core.frames import LabelBox
from cvloop.stages.annotate import ReviewQueue
from cvloop.stages.repo_lease import writes_data_repo
from cvloop.stages.versioning import read_reviewed

if TYPE_CHECKING:
    from cvloop.config.params import HoldoutParams, ReviewParams, ValidateParams, VersionParams
    from cvloop.context import Context

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
    # the leakage report, holdout (and retired) vs training: exact, near-duplicate and
    # same-capture-event overlaps (a version is made only when all are 0)
    leakage: dict = field(default_factory=dict)


def export_reviews(
    ctx: Context, queue: ReviewQueue, review: ReviewParams, drift_classes: list[str]
) -> ReviewedExport:
    """Every submitted annotation, with its pre-annotation and edit counts, to
    ``reviewed.jsonl`` in the run's folder (the dataset is built from this file)."""
    from cvloop.core.review import compare_boxes, frame_edits
    from cvloop.stages.schema import schema_log

    _total, reviewed = ctx.labelstudio.reviewed(queue.project_id)
    # boxes drawn under an earlier schema version (the schema changed during the review)
    # follow it: renamed and merged classes get today's names, dropped classes go
    translate = schema_log(ctx).translate()
    lines = []
    for r in reviewed:
        r = replace(
            r,
            final=_translated(r.final, translate),
            predicted=_translated(r.predicted, translate),
        )
        why = [w.strip() for w in str(r.data.get("why", "")).split(";") if w.strip()]
        tags = [w for w in why if slices.is_drift(w)]
        tags += [str(slices.drift_class(b.label)) for b in r.final if b.label in drift_classes]
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
                    "edits": frame_edits(
                        compare_boxes(r.predicted, r.final, review.iou_match, review.moved_iou)
                    ),
                    "reviewed_at": r.completed_at,
                }
            )
        )
    key = f"{queue.run_base}/{REVIEWED}"
    ctx.store.put_text(key, "\n".join(lines) + ("\n" if lines else ""))
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


def validate_reviews(
    ctx: Context,
    export: ReviewedExport,
    classes: list[str],
    rules: ValidateParams,
) -> ValidatedReviews:
    """Run the annotation suite; frames that break a rule go to the quarantine report."""
    from cvloop.adapters.detector import decode_jpeg
    from cvloop.core.validate import FrameToCheck, validate_annotations

    store = ctx.store
    rows = read_reviewed(store, export.key)
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
        min_box_area=rules.min_box_area,
        max_box_area=rules.max_box_area,
        duplicate_iou=rules.duplicate_iou,
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


@writes_data_repo("the retrain's versioning")
def version_reviewed_data(
    ctx: Context,
    validated: ValidatedReviews,
    dataset_version: str,
    classes: list[str],
    label_policy_version: int,
    hp: HoldoutParams,
    vp: VersionParams,
) -> NewVersions:
    """Merge the valid reviewed frames into dataset v_n+1 (old frames stay) and, up to the
    quota, drift frames into holdout v_k+1; check for leakage; dvc add, commit, push, tag.

    The holdout's drift part rotates: when the new drift frames would take the holdout
    past ``holdout.max_frames``, its oldest drift frames are retired (they stay in the
    holdout versions that held them, and in ``retired.jsonl``: never trained on), so every
    retrain adds its ``add_per_retrain`` drift frames. The clean part is the quarterly
    refresh's to renew.

    Idempotent: the split plan is journaled (``<run>/version-plan.json``) and replayed,
    frames already in a version are skipped, and a tag that already holds the same data is
    not made again, so a re-run after a crash ends in the state of an uninterrupted run.
    """
    from cvloop.adapters.datasets import add_frames, read_manifest, read_retired, retire_frames
    from cvloop.adapters.versioning import (
        DATASET_DIR,
        DATASET_POINTER,
        HOLDOUT_DIR,
        HOLDOUT_POINTER,
        next_version,
    )
    from cvloop.core.faults import crash_point
    from cvloop.core.frames import Candidate, SplitPlan, plan_split
    from cvloop.stages.schema import require_migrated
    from cvloop.stages.versioning import ReviewedFrames, commit_folder, open_repo, refuse_leakage

    store = ctx.store
    repo, schema = open_repo(ctx, classes, [DATASET_POINTER, HOLDOUT_POINTER])
    ds_root, ho_root = repo.root / DATASET_DIR, repo.root / HOLDOUT_DIR
    require_migrated(ds_root, schema)
    require_migrated(ho_root, schema)
    training, holdout = read_manifest(ds_root), read_manifest(ho_root)
    retired = read_retired(ho_root)  # former holdout frames: as much held out as the rest
    gap_ms = int(hp.capture_event_seconds * 1000)
    frames = ReviewedFrames.read(store, validated.reviewed_key, validated.valid)
    # the plan is journaled before anything is written (and after the leakage check, which
    # writes nothing): a re-run after a kill at any later point replays it (the same frames
    # to the same versions) instead of planning again on a dataset that already holds part
    # of this run's frames
    base = validated.reviewed_key.rsplit("/", 1)[0]
    journal_key = f"{base}/version-plan.json"
    journal = json.loads(store.get_text(journal_key)) if store.exists(journal_key) else None
    if journal:
        dataset_version, holdout_version = journal["dataset_version"], journal["holdout_version"]
        plan = SplitPlan.from_dict(journal["plan"])
        retire = list(journal.get("retire") or [])
    else:
        dataset_version = _free_dataset_name(repo, dataset_version, training, frames.rows,
                                             ds_root)  # fmt: skip
        candidates = [Candidate(s, frames.dhash(s),
                                any(slices.is_drift(t) for t in r["slice_tags"]),
                                str(r.get("camera") or ""), int(r.get("ts_ms") or 0))
                      for s, r in frames.rows.items()]  # fmt: skip
        rotatable = oldest_drift_first(holdout)
        quota = max(0, min(hp.add_per_retrain, hp.max_frames - len(holdout) + len(rotatable)))
        plan = plan_split(candidates, training=training, holdout=holdout + retired,
                          holdout_quota=quota, val_share=vp.val_share,
                          near_dup_bits=hp.near_duplicate_hamming,
                          max_drift_share=hp.max_drift_share, event_gap_ms=gap_ms)  # fmt: skip
        excess = max(0, len(holdout) + len(plan.holdout) - hp.max_frames)
        retire = [e.sha256 for e in rotatable[:excess]]
        holdout_version = (f"holdout-v{next_version(repo, 'holdout')}"
                           if plan.holdout or retire else None)  # fmt: skip
    in_train = {e.sha256 for e in training}
    in_holdout = {e.sha256 for e in holdout}
    # leakage check on what the versions *will* hold (a replayed plan's frames already
    # written are not counted twice), before anything is written
    leakage = refuse_leakage(holdout + retired + frames.entries([h for h in plan.holdout
                                                                 if h not in in_holdout]),
                   training + frames.entries([t for t in plan.train + plan.val
                                              if t not in in_train]),
                   hp.near_duplicate_hamming,
                   fix="nothing was versioned; inspect the frames, then refresh the holdout "
                   "(runbooks/review.md, step 9)", event_gap_ms=gap_ms,
                   new=set(frames.rows))  # fmt: skip
    if not journal:
        store.put_text(journal_key, json.dumps({"dataset_version": dataset_version,
                                                "holdout_version": holdout_version,
                                                "plan": asdict(plan), "retire": retire},
                                               indent=2))  # fmt: skip
    crash_point("dataset:planned")
    new = itertools.chain(
        (frames.new_frame(s, "train") for s in plan.train),
        (frames.new_frame(s, "val") for s in plan.val),
    )  # one at a time
    added = {"train": len(plan.train), "val": len(plan.val), "holdout": 0, "retired": 0}
    add_frames(ds_root, new, classes, dataset_version, label_policy_version)
    dataset = commit_folder(repo, DATASET_DIR, DATASET_POINTER, dataset_version,
                            f"{dataset_version}: +{len(plan.train) + len(plan.val)} reviewed frames "
                            f"({len(plan.already_present)} already in)")  # fmt: skip
    holdout_rec = None
    if holdout_version:
        add_frames(ho_root, (frames.new_frame(s, "holdout") for s in plan.holdout), classes,
                   holdout_version, label_policy_version)  # fmt: skip
        added["holdout"] = sum(e.added_in == holdout_version for e in read_manifest(ho_root))
        retire_frames(ho_root, retire, holdout_version)
        added["retired"] = sum(1 for e in read_retired(ho_root) if e.sha256 in set(retire))
        message = f"{holdout_version}: +{added['holdout']} reviewed drift frames"
        if retire:
            message += (f", {len(retire)} oldest drift frames retired (kept in the earlier "
                        "holdout versions and retired.jsonl; never trained on)")  # fmt: skip
        holdout_rec = asdict(commit_folder(repo, HOLDOUT_DIR, HOLDOUT_POINTER, holdout_version,
                                           message))  # fmt: skip
    out = NewVersions(asdict(dataset), holdout_rec, added, len(plan.held_back),
                      len(plan.already_present), f"{base}/versions.json",
                      str(ds_root / "data.yaml"), str(ho_root), leakage)  # fmt: skip
    store.put_text(out.manifest_key, json.dumps(asdict(out), indent=2))
    return out


def oldest_drift_first(holdout: list) -> list:
    """The holdout's drift frames, the oldest first (the version that added them, then the
    capture time): the ones a rotation retires first."""
    import re

    def version(e) -> int:
        m = re.fullmatch(r"holdout-v(\d+)", e.added_in)
        return int(m.group(1)) if m else 0

    drift = [e for e in holdout if any(slices.is_drift(t) for t in e.slice_tags)]
    return sorted(drift, key=lambda e: (version(e), e.ts_ms, e.sha256))


def _free_dataset_name(repo, name: str, training, rows: dict, ds_root) -> str:
    """``name``, unless a schema change took it while the frames were in review: then the
    next free one (or the one a crashed run of this step already wrote these frames under)."""
    from cvloop.adapters.versioning import next_version

    if not (repo.tag_message(name) or "").startswith("cvloop schema-v"):
        return name
    mine = {e.added_in for e in training if e.sha256 in rows}
    last = (ds_root / "VERSION").read_text().strip()
    reuse = last in mine and not (repo.tag_message(last) or "").startswith("cvloop schema")
    return last if reuse else f"dataset-v{next_version(repo, 'dataset')}"


def record_data_steps(
    ctx: Context,
    mlflow_run: str,
    batch,
    selection,
    validated: ValidatedReviews,
    versions: NewVersions,
    review_reason: str,
    project_url: str,
) -> None:
    """The data half of a retrain on its MLflow run: frames through each step, the dataset
    and holdout versions it made, why the review ended, where the reviews are."""
    from registry.names import (
        DATASET_DVC_MD5,
        DATASET_GIT_REV,
        DATASET_VERSION,
        HOLDOUT_VERSION,
        LABELSTUDIO_PROJECT,
        REVIEW_REASON,
    )

    ctx.tracker.log_metrics(mlflow_run, {
        "frames.collected": batch.summary["collected"],
        "frames.selected": selection.summary["selected"],
        "frames.reviewed": validated.summary["reviewed"],
        "frames.quarantined": validated.summary["quarantined"],
        "frames.added.train": versions.added["train"],
        "frames.added.val": versions.added["val"],
        "frames.added.holdout": versions.added["holdout"],
        "frames.retired.holdout": versions.added.get("retired", 0),
    })  # fmt: skip
    ctx.tracker.set_tags(mlflow_run, {
        DATASET_VERSION: versions.dataset["name"],
        DATASET_DVC_MD5: versions.dataset["dvc_md5"],
        DATASET_GIT_REV: versions.dataset["git_rev"],
        HOLDOUT_VERSION: (versions.holdout or {}).get("name", "unchanged"),
        REVIEW_REASON: review_reason,
        LABELSTUDIO_PROJECT: project_url,
    })  # fmt: skip

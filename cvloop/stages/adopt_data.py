"""Adoption, the data: the team's labeled frames into dataset v1, its holdout (its own
labeled set, or carved out of the data) into holdout v1 — checked on the way in by the
suite reviewed frames pass, a quarantine report for what is refused, and no frame (or a
near-duplicate of one) in both. The flow is ``flows/adopt.py``; the checkpoint's side is
:mod:`cvloop.stages.adopt`."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cvloop.adapters.label_import import SourceData, read_source
from cvloop.core.errors import CvloopError
from cvloop.core.frames import (  # imported frames: no camera or time, each its own event
    IMPORTED_CAMERA,
    LabelBox,
    NewFrame,
    check_overlap,
    content_hash,
    dhash,
)

if TYPE_CHECKING:
    from cvloop.context import Context
    from cvloop.core.schema import ClassSchema


@dataclass
class ImportReport:
    """What one import did: frames in, frames quarantined (with reasons), boxes per class."""

    format: str
    origin: str
    frames: int = 0
    valid: int = 0
    quarantined: list[dict] = field(default_factory=list)  # {path, reason}
    boxes: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {"format": self.format, "origin": self.origin, "frames": self.frames,
                "valid": self.valid, "quarantined": len(self.quarantined),
                "boxes": self.boxes, "notes": self.notes}  # fmt: skip


@dataclass(frozen=True)
class Checked:
    """A frame that passed every check, ready to be written (pixels are decoded again then:
    a large import never holds its images in memory)."""

    path: str
    sha256: str
    boxes: list[LabelBox]
    split: str | None
    mtime_ms: int
    dominant: str
    dhash: str  # perceptual hash (hex), for the overlap check against the holdout

    @property
    def id(self) -> str:  # a frame's id in a dataset folder (adapters/datasets.py)
        return self.sha256[:20]


def parse_class_map(pairs: list[str] | None) -> dict[str, str]:
    out = {}
    for pair in pairs or []:
        src, sep, dst = pair.partition("=")
        if not sep or not src.strip() or not dst.strip():
            raise CvloopError(f"--class-map {pair!r} is not NAME=SCHEMA_NAME",
                              fix="e.g. --class-map Forklift=forklift")  # fmt: skip
        out[src.strip()] = dst.strip()
    return out


def _mapped(src: SourceData, classes: list[str], class_map: dict[str, str]) -> dict[str, str]:
    """Source name -> schema name; refuses a class that is in the data but not the schema."""
    used = Counter(b.label for f in src.frames for b in f.boxes)
    names = {n: class_map.get(n, n) for n in set(src.classes) | set(used)}
    unknown = sorted(n for n, m in names.items() if m not in classes and used[n])
    if unknown:
        examples = {n: next(f.path for f in src.frames if any(b.label == n for b in f.boxes))
                    for n in unknown}  # fmt: skip
        raise CvloopError(
            f"{src.origin}: classes {unknown} are not in the schema {classes} "
            f"(e.g. {examples[unknown[0]]})",
            fix="map each to a schema class: --class-map "
            + " --class-map ".join(f"{n}={classes[0]}" for n in unknown[:2])
            + f" (known: {', '.join(classes)})",
        )
    bad = sorted(m for n, m in class_map.items() if m not in classes)
    if bad:
        raise CvloopError(f"--class-map targets {bad} are not in the schema {classes}",
                          fix=f"map onto one of: {', '.join(classes)}")  # fmt: skip
    return names


def check_source(ctx: Context, src: SourceData, classes: list[str], class_map: dict[str, str]
                 ) -> tuple[list[Checked], ImportReport]:  # fmt: skip
    """Every frame through the annotation suite (image readable, class in schema, box inside
    the image, not degenerate, area bounds, no duplicate box) and the size it was labeled on."""
    import os

    from cvloop.adapters.detector import decode_jpeg
    from cvloop.core.validate import FrameToCheck, validate_annotations

    names = _mapped(src, classes, class_map)
    rep = ImportReport(src.format, src.origin, notes=list(src.notes))
    rep.quarantined += [{"path": r.path, "reason": r.reason} for r in src.rejected]
    rep.frames = len(src.frames) + len(src.rejected)
    to_check, by_sha, seen = [], {}, set()
    for f in src.frames:
        data = Path(f.path).read_bytes()
        sha = content_hash(data)
        if sha in seen:
            rep.notes.append(f"{f.path}: the same image as another file (kept once)")
            continue
        seen.add(sha)
        w = h = 1
        readable, phash = True, "0" * 16
        try:
            pixels = decode_jpeg(data)
            h, w = pixels.shape[:2]
            phash = f"{dhash(pixels):016x}"
        except CvloopError:
            readable = False  # the suite's image_readable rule quarantines it
        if readable and f.size and tuple(f.size) != (w, h):
            rep.quarantined.append({"path": f.path, "reason": f"labeled on a {f.size[0]}x"
                                    f"{f.size[1]} image, the file is {w}x{h}"})  # fmt: skip
            continue
        boxes = [LabelBox(names[b.label], b.cx, b.cy, b.w, b.h) for b in f.boxes]
        to_check.append(FrameToCheck(sha, f.path, readable, w, h, boxes))
        top = Counter(b.label for b in boxes).most_common(1)
        by_sha[sha] = Checked(f.path, sha, boxes, f.split, int(os.path.getmtime(f.path) * 1000),
                              top[0][0] if top else "empty", phash)  # fmt: skip
    if not to_check:
        return [], rep
    v = ctx.params.validate_
    result = validate_annotations(to_check, classes, min_box_area=v.min_box_area,
                                  max_box_area=v.max_box_area, duplicate_iou=v.duplicate_iou)  # fmt: skip
    reasons: dict[str, list[str]] = {}
    for x in result.violations:
        reasons.setdefault(x.frame, []).append(f"{x.rule}: {x.detail}")
    rep.quarantined += [
        {"path": by_sha[s].path, "reason": "; ".join(r)} for s, r in reasons.items()
    ]
    ok = [by_sha[s] for s in result.valid]
    rep.valid = len(ok)
    rep.boxes = dict(sorted(Counter(b.label for c in ok for b in c.boxes).items()))
    return ok, rep


def _split(c: Checked, val_share: float) -> str:
    if c.split in ("train", "val"):
        return c.split
    if c.split == "test":
        return "val"
    h = int(c.sha256[:8], 16)
    return "val" if (h % 10_000) / 10_000 < val_share else "train"


def _new_frame(c: Checked, split: str, why: str) -> NewFrame:
    return NewFrame(image=Path(c.path).read_bytes(), boxes=c.boxes, source_key=c.path,
                    camera=IMPORTED_CAMERA, ts_ms=c.mtime_ms, split=split,
                    label_source="imported", why_selected=[why],
                    slice_tags=["imported"])  # fmt: skip


@dataclass(frozen=True)
class AdoptedData:
    """Dataset v1 and holdout v1 written into the data repository (not yet versioned)."""

    dataset_yaml: str
    holdout_yaml: str
    train_frames: int
    val_frames: int
    holdout_frames: int
    dataset: dict  # ImportReport.summary() of the data
    holdout: dict  # of the holdout (its own import, or the carve)
    report_key: str  # the quarantine report in the frame store


def _carve(ok: list[Checked], n: int, seed: str) -> tuple[list[Checked], list[Checked]]:
    """``n`` frames for the holdout, stratified by the source's split and each frame's
    most frequent class (deterministic for the file), the rest for training."""
    from cvloop.core.holdout import stratified_sample

    rows = [{"sha256": c.sha256, "split": c.split or "-", "dominant": c.dominant} for c in ok]
    pick = stratified_sample(rows, n, seed, key=lambda r: (r["split"], r["dominant"]),
                             why="adoption holdout")  # fmt: skip
    chosen = {r["sha256"] for r in pick.rows}
    return [c for c in ok if c.sha256 in chosen], [c for c in ok if c.sha256 not in chosen]


def _write_schema(root: Path, schema: ClassSchema) -> None:
    """``schema.yaml`` (v1) for the first dataset version to commit, unless it is there."""
    from cvloop.core.schema import SCHEMA_FILE, SchemaLog

    path = root / SCHEMA_FILE
    if not path.exists():
        path.write_text(SchemaLog([schema]).to_yaml())


def import_adopted_data(
    ctx: Context,
    run_id: str,
    tag: str,
    schema: ClassSchema,
    source: str,
    *,
    fmt: str | None = None,
    images_dir: str | None = None,
    class_map: list[str] | None = None,
    holdout: str | None = None,
    holdout_format: str | None = None,
    holdout_images_dir: str | None = None,
    holdout_frames: int | None = None,
) -> AdoptedData:
    """The team's labeled data into ``datasets/`` and its holdout into ``holdout/data/``
    under ``schema`` (v1: the checkpoint's classes, written as ``schema.yaml`` once every
    check passed); ``tag``: the adoption's mark, ``adopt <sha12>``, carried by the version
    messages."""
    from cvloop.adapters.datasets import add_frames
    from cvloop.adapters.versioning import DATASET_DIR, HOLDOUT_DIR

    classes = list(schema.classes)
    cmap = parse_class_map(class_map)
    ok, rep = check_source(ctx, read_source(source, fmt, images_dir), classes, cmap)
    hp = ctx.params.holdout
    if holdout:
        hold, hrep = check_source(ctx, read_source(holdout, holdout_format, holdout_images_dir),
                                  classes, cmap)  # fmt: skip
        train = ok
        over = check_overlap(train, hold, hp.near_duplicate_hamming)
        if not over.clean:
            path = {c.id: c.path for c in train}
            first = [path[i] for i in (over.exact or [n[0] for n in over.near])[:3]]
            raise CvloopError(
                f"the holdout {holdout} overlaps the data {source}: {len(over.exact)} identical "
                f"and {len(over.near)} nearly identical frames (e.g. {first})",
                fix="take those frames out of one of the two (a holdout must never be trained "
                "on), or drop --holdout and carve one with --holdout-frames N",
            )
    else:
        n = holdout_frames or hp.min_frames
        if n >= len(ok):
            raise CvloopError(
                f"{source}: {len(ok)} valid frames cannot give a holdout of {n} and training data",
                fix="bring more labeled frames, a holdout of your own (--holdout PATH), or a "
                "smaller --holdout-frames",
            )
        hold, rest = _carve(ok, n, tag)
        near = {i for i, _, _ in check_overlap(rest, hold, hp.near_duplicate_hamming).near}
        train = [c for c in rest if c.id not in near]
        hrep = ImportReport(rep.format, f"{n} frames carved out of {source}", len(hold),
                            len(hold), boxes=dict(Counter(b.label for c in hold for b in c.boxes)))  # fmt: skip
        if near:
            rep.notes.append(f"{len(near)} frames left out of training: near-duplicates of a "
                             "holdout frame (the holdout is never trained on)")  # fmt: skip
    if not hold:
        raise CvloopError(f"the holdout {holdout or source} has no valid frame",
                          fix="give a labeled holdout whose frames pass the checks "
                          "(see the quarantine report)")  # fmt: skip
    if not train:
        raise CvloopError(f"{source}: no valid frame left for training",
                          fix="see the quarantine report; fix the labels and run again")  # fmt: skip
    root = ctx.data_repo.root
    _write_schema(root, schema)
    vs = ctx.params.version.val_share
    lp = schema.label_policy_version
    add_frames(root / DATASET_DIR, (_new_frame(c, _split(c, vs), "adopted") for c in train),
               classes, "dataset-v1", lp)  # fmt: skip
    add_frames(root / HOLDOUT_DIR, (_new_frame(c, "holdout", "adopted holdout") for c in hold),
               classes, "holdout-v1", lp)  # fmt: skip
    from cvloop.adapters.datasets import mark_folder

    for d in (DATASET_DIR, HOLDOUT_DIR):
        mark_folder(root / d, schema)
    key = f"adopt/{run_id}/quarantine.json"
    ctx.store.put_text(key, json.dumps({"data": rep.quarantined, "holdout": hrep.quarantined},
                                       indent=2))  # fmt: skip
    ctx.tracker.log_dict(run_id, {"data": rep.summary(), "holdout": hrep.summary(),
                                  "quarantined": {"data": rep.quarantined,
                                                  "holdout": hrep.quarantined}},
                         "adopt/import.json")  # fmt: skip
    splits = Counter(_split(c, vs) for c in train)
    return AdoptedData(str(root / DATASET_DIR / "data.yaml"), str(root / HOLDOUT_DIR / "data.yaml"),
                       splits["train"], splits["val"], len(hold), rep.summary(), hrep.summary(),
                       key)  # fmt: skip

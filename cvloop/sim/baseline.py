"""The baseline data of ``cvloop bootstrap``: dataset v1 and holdout v1 from clean conditions.

A real team starts from frames its labelling team annotated; the synthetic fleet's ground
truth stands in for that here (``label_source = synthetic-truth`` in the manifest). Frames
are one per capture event (no burst near-duplicates); the holdout is drawn from later days
than the training pool, so the two share no capture event, and the overlap check (content
hash and perceptual hash) must come back clean before anything is versioned.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path

from cvloop.adapters.datasets import add_frames, read_manifest
from cvloop.adapters.storage import Storage
from cvloop.core.errors import CvloopError
from cvloop.core.frames import LabelBox, NewFrame, check_overlap, dhash, hamming
from cvloop.core.schema import ClassSchema
from cvloop.sim.fleet.generate import FleetConfig, cameras_named, frame_refs, render_ref
from cvloop.sim.fleet.scene import encode_jpeg


@dataclass(frozen=True)
class BaselinePaths:
    dataset_dir: Path
    holdout_dir: Path
    train_frames: int
    val_frames: int
    holdout_frames: int


def _split_for(event: int, val_share: float) -> str:
    import hashlib

    h = int.from_bytes(hashlib.sha256(f"split|{event}".encode()).digest()[:4], "big")
    return "val" if (h % 10_000) / 10_000 < val_share else "train"


def build_baseline(
    cfg: FleetConfig,
    start: dt.date,
    days: int,
    train_frames: int,
    holdout_frames: int,
    dataset_dir: Path,
    holdout_dir: Path,
    classes: list[str],
    label_policy_version: int,
    val_share: float,
    near_dup_bits: int,
    store: Storage | None = None,
) -> BaselinePaths:
    """Render, label and write dataset v1 and holdout v1 (idempotent: frames already
    present are skipped)."""
    if days < 2:
        raise CvloopError("bootstrap needs at least 2 days (training days and holdout days)")
    holdout_days = max(1, round(days * holdout_frames / (train_frames + holdout_frames)))
    train_days = days - holdout_days
    cams = cfg.all_cameras()
    per_day_train = math.ceil(train_frames / (train_days * len(cams)))
    per_day_hold = math.ceil(2 * holdout_frames / (holdout_days * len(cams)))  # spares
    bursts = max(per_day_train, per_day_hold)
    cfg = FleetConfig(
        seed=cfg.seed,
        cameras=cfg.cameras,
        image_size=cfg.image_size,
        bursts_per_day=bursts,
        frames_per_burst=1,
        classes=cfg.classes,
    )

    def frames_for(
        day_range: range, limit: int, split_fn, avoid: list[int] | None = None
    ) -> list[NewFrame]:
        """Up to ``limit`` frames spread evenly over the days; with ``avoid``, frames that
        are near-duplicates (perceptual hash) of those hashes or of each other are skipped."""
        refs = [
            r
            for d in day_range
            for c in cams
            for r in frame_refs(cfg, c, start + dt.timedelta(days=d))
        ]
        if len(refs) > limit:  # spread the pick evenly, then the rest as replacements
            step = len(refs) / limit
            first = [int(i * step) for i in range(limit)]
            rest = sorted(set(range(len(refs))) - set(first))
            refs = [refs[i] for i in first + rest]
        seen = list(avoid or [])
        out = []
        for ref in refs:
            if len(out) >= limit:
                break
            pixels, boxes = render_ref(cfg, ref)
            if avoid is not None:
                h = dhash(pixels)
                if any(hamming(h, o) <= near_dup_bits for o in seen):
                    continue
                seen.append(h)
            jpeg = encode_jpeg(pixels)
            if store is not None and not store.exists(ref.key):
                store.put_bytes(ref.key, jpeg)
            out.append(
                NewFrame(
                    image=jpeg,
                    boxes=[LabelBox(b.label, b.cx, b.cy, b.w, b.h) for b in boxes],
                    source_key=ref.key,
                    camera=ref.camera,
                    ts_ms=ref.ts_ms,
                    split=split_fn(ref.event),
                    label_source="synthetic-truth",
                    why_selected=["baseline"],
                    slice_tags=["clean"],
                    pixels=pixels,
                )
            )
        return out

    train = frames_for(range(train_days), train_frames, lambda e: _split_for(e, val_share))
    train_hashes = [dhash(f.pixels) for f in train]
    hold = frames_for(
        range(train_days, days), holdout_frames, lambda e: "holdout", avoid=train_hashes
    )
    if len(hold) < holdout_frames:
        raise CvloopError(
            f"only {len(hold)} of {holdout_frames} holdout frames are distinct from training",
            fix="raise bootstrap.days or lower bootstrap.holdout_frames",
        )
    add_frames(dataset_dir, train, classes, "dataset-v1", label_policy_version)
    add_frames(holdout_dir, hold, classes, "holdout-v1", label_policy_version)

    overlap = check_overlap(read_manifest(holdout_dir), read_manifest(dataset_dir), near_dup_bits)
    if not overlap.clean:
        raise CvloopError(
            f"holdout leaks into training: {len(overlap.exact)} identical and "
            f"{len(overlap.near)} near-duplicate frames (e.g. {(overlap.exact + overlap.near)[:3]})",
            fix="draw the holdout from other capture events; it must never overlap training",
        )
    entries = read_manifest(dataset_dir)
    return BaselinePaths(
        dataset_dir,
        holdout_dir,
        sum(e.split == "train" for e in entries),
        sum(e.split == "val" for e in entries),
        len(read_manifest(holdout_dir)),
    )


@dataclass(frozen=True)
class BaselineData:
    dataset_yaml: str
    holdout_yaml: str
    train_frames: int
    val_frames: int
    holdout_frames: int


def build_baseline_data(
    dataset_dir: Path,
    holdout_dir: Path,
    store: Storage,
    schema: ClassSchema,
    seed: int,
    cameras: int,
    image_size: int,
    days_ago: int,
    days: int,
    train_frames: int,
    holdout_frames: int,
    classes: list[str],
    label_policy_version: int,
    val_share: float,
    near_dup_bits: int,
) -> BaselineData:
    """Render the clean baseline period into ``dataset_dir`` (v1) and ``holdout_dir`` (v1),
    the frames into ``store``; both folders follow ``schema`` (its classes must be
    ``classes``)."""
    start = dt.date.today() - dt.timedelta(days=days_ago)
    cfg = FleetConfig(
        seed=seed, cameras=cameras_named(cameras), image_size=image_size, classes=tuple(classes)
    )
    paths = build_baseline(
        cfg,
        start,
        days,
        train_frames,
        holdout_frames,
        dataset_dir,
        holdout_dir,
        classes,
        label_policy_version,
        val_share,
        near_dup_bits,
        store=store,
    )
    from cvloop.adapters.datasets import mark_folder

    if list(schema.classes) != list(classes):
        raise CvloopError(
            f"the baseline's classes {classes} are not {schema.tag}'s {list(schema.classes)}",
            fix="bootstrap with the schema's classes (`cvloop schema show`)",
        )
    for folder in (paths.dataset_dir, paths.holdout_dir):
        mark_folder(folder, schema)
    return BaselineData(
        str(paths.dataset_dir / "data.yaml"),
        str(paths.holdout_dir / "data.yaml"),
        paths.train_frames,
        paths.val_frames,
        paths.holdout_frames,
    )

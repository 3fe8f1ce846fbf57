"""Dataset versions on disk: YOLO images + labels + ``data.yaml`` + a per-frame manifest.

Layout of a dataset folder (``datasets/`` for training, ``holdout/data/`` for the holdout)::

    data.yaml                 names + train/val folders (no absolute path: portable)
    images/<split>/<id>.jpg   id = the first 20 hex digits of the image's sha256
    labels/<split>/<id>.txt   YOLO: class cx cy w h (normalized)
    manifest.jsonl            one JSON object per frame (see :class:`FrameEntry`)
    VERSION                   e.g. "v2"

A frame's identity is the sha256 of its image bytes: the same frame is never stored twice,
and overlap between the holdout and training data is checked on it (and on a perceptual
hash, for near-duplicates).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

from cvloop.errors import CvloopError

MANIFEST = "manifest.jsonl"


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def frame_id(data: bytes) -> str:
    return content_hash(data)[:20]


def dhash(pixels: np.ndarray, size: int = 8) -> int:
    """64-bit difference hash of an RGB/gray frame (near-duplicate detection)."""
    import cv2

    gray = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray, (size + 1, size), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int(np.packbits(bits).view(">u8")[0])


def hamming(a: int, b: int) -> int:
    return int((a ^ b).bit_count())


@dataclass(frozen=True)
class LabelBox:
    """One labelled box: class name and normalized ``cx, cy, w, h``."""

    label: str
    cx: float
    cy: float
    w: float
    h: float


@dataclass
class FrameEntry:
    """Provenance of one frame of a dataset version."""

    id: str
    sha256: str
    split: str
    source_key: str
    camera: str
    ts_ms: int
    dhash: str
    boxes: int
    label_source: str  # reviewed | auto | synthetic-truth
    label_policy_version: int
    added_in: str  # dataset version that first included it
    why_selected: list[str] = field(default_factory=list)
    slice_tags: list[str] = field(default_factory=list)
    edits: dict[str, int] = field(default_factory=dict)


@dataclass
class NewFrame:
    """A labelled frame to add to a dataset version."""

    image: bytes
    boxes: list[LabelBox]
    source_key: str
    camera: str
    ts_ms: int
    split: str
    label_source: str
    why_selected: list[str] = field(default_factory=list)
    slice_tags: list[str] = field(default_factory=list)
    edits: dict[str, int] = field(default_factory=dict)
    pixels: np.ndarray | None = None


def read_manifest(root: Path) -> list[FrameEntry]:
    path = root / MANIFEST
    if not path.exists():
        return []
    return [FrameEntry(**json.loads(line)) for line in path.read_text().splitlines() if line]


def write_data_yaml(
    root: Path, classes: list[str], splits: Iterable[str] = ("train", "val")
) -> Path:
    """``data.yaml`` without ``path:``, so Ultralytics resolves folders next to the file.

    An evaluation-only set (a single ``holdout`` split) points train/val/test at it, since
    Ultralytics requires those keys.
    """
    splits = list(splits)
    if splits == ["holdout"]:
        spec: dict[str, object] = {k: "images/holdout" for k in ("train", "val", "test")}
    else:
        spec = {s: f"images/{s}" for s in splits}
    spec["names"] = dict(enumerate(classes))
    path = root / "data.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def yolo_label_lines(boxes: list[LabelBox], classes: list[str]) -> str:
    lines = []
    for b in boxes:
        if b.label not in classes:
            raise CvloopError(
                f"label {b.label!r} is not in the class schema {classes}",
                fix="fix the label, or add the class to schema.classes in params.yaml",
            )
        lines.append(f"{classes.index(b.label)} {b.cx:.6f} {b.cy:.6f} {b.w:.6f} {b.h:.6f}")
    return "\n".join(lines) + ("\n" if lines else "")


def add_frames(
    root: Path,
    frames: Iterable[NewFrame],
    classes: list[str],
    version: str,
    label_policy_version: int,
) -> tuple[int, int]:
    """Add frames to the dataset folder at ``root`` (created if needed), merging with what is
    there: a frame already present (same content hash) is skipped. Returns (added, skipped).
    """
    from cvloop.detector import decode_jpeg

    root.mkdir(parents=True, exist_ok=True)
    entries = read_manifest(root)
    known = {e.sha256 for e in entries}
    added = skipped = 0
    new_entries = []
    for f in frames:
        sha = content_hash(f.image)
        if sha in known:
            skipped += 1
            continue
        fid = sha[:20]
        img_path = root / "images" / f.split / f"{fid}.jpg"
        lbl_path = root / "labels" / f.split / f"{fid}.txt"
        img_path.parent.mkdir(parents=True, exist_ok=True)
        lbl_path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(lbl_path, yolo_label_lines(f.boxes, classes).encode())
        _atomic_write(img_path, f.image)
        pixels = f.pixels if f.pixels is not None else decode_jpeg(f.image)
        new_entries.append(
            FrameEntry(
                id=fid,
                sha256=sha,
                split=f.split,
                source_key=f.source_key,
                camera=f.camera,
                ts_ms=f.ts_ms,
                dhash=f"{dhash(pixels):016x}",
                boxes=len(f.boxes),
                label_source=f.label_source,
                label_policy_version=label_policy_version,
                added_in=version,
                why_selected=list(f.why_selected),
                slice_tags=list(f.slice_tags),
                edits=dict(f.edits),
            )
        )
        known.add(sha)
        added += 1
    all_entries = entries + new_entries
    _atomic_write(
        root / MANIFEST, "".join(json.dumps(asdict(e)) + "\n" for e in all_entries).encode()
    )
    splits = sorted({e.split for e in all_entries}) or ["train", "val"]
    write_data_yaml(root, classes, splits)
    (root / "VERSION").write_text(version + "\n")
    return added, skipped


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Overlap:
    exact: list[str]
    near: list[tuple[str, str, int]]

    @property
    def clean(self) -> bool:
        return not self.exact and not self.near


def _distances(hashes: np.ndarray, h: int) -> np.ndarray:
    """Hamming distance from the 64-bit hash ``h`` to each of ``hashes`` (uint64)."""
    x = np.bitwise_xor(hashes, np.uint64(h))
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


def check_overlap(
    holdout: list[FrameEntry], training: list[FrameEntry], max_hamming: int
) -> Overlap:
    """Holdout frames that also appear in training: identical bytes, or near-duplicates
    (perceptual hash within ``max_hamming`` bits)."""
    train_sha = {e.sha256 for e in training}
    exact = sorted(e.id for e in holdout if e.sha256 in train_sha)
    near = []
    if max_hamming >= 0 and training:
        th = np.array([int(e.dhash, 16) for e in training], dtype=np.uint64)
        for e in holdout:
            if e.sha256 in train_sha:
                continue
            dist = _distances(th, int(e.dhash, 16))
            j = int(dist.argmin())
            if dist[j] <= max_hamming:
                near.append((e.id, training[j].id, int(dist[j])))
    return Overlap(exact, near)


@dataclass(frozen=True)
class Candidate:
    """A reviewed, valid frame that may join a dataset version."""

    sha256: str
    dhash: str
    drift: bool  # from a drift-flagged slice (camera or class of the triggering event)


@dataclass(frozen=True)
class SplitPlan:
    train: list[str]
    val: list[str]
    holdout: list[str]
    held_back: list[tuple[str, str]]  # (frame, holdout frame it nearly duplicates)
    already_present: list[str]


def hash_share(sha256: str) -> float:
    """A frame's place in [0, 1) from its hash: splits that never move between runs."""
    return int(sha256[:8], 16) / 2**32


def plan_split(
    frames: list[Candidate],
    *,
    training: list[FrameEntry],
    holdout: list[FrameEntry],
    holdout_quota: int,
    val_share: float,
    near_dup_bits: int,
    max_drift_share: float = 0.5,
) -> SplitPlan:
    """Where each new frame goes (deterministic: a re-run plans the same).

    Up to ``holdout_quota`` drift frames, and at most ``max_drift_share`` of the new drift
    frames (the rest must teach the model), go to the holdout (never one already used for
    training); frames that nearly duplicate a new holdout frame are held back from training
    (they stay in Label Studio) so the holdout never leaks; the rest split train/val by hash.
    """
    in_train = {e.sha256 for e in training}
    in_holdout = {e.sha256 for e in holdout}
    present = [f.sha256 for f in frames if f.sha256 in in_train | in_holdout]
    new = sorted(
        (f for f in frames if f.sha256 not in in_train | in_holdout), key=lambda f: f.sha256
    )
    picked: list[Candidate] = []
    quota = min(holdout_quota, int(sum(f.drift for f in new) * max_drift_share))
    trained = np.array([int(e.dhash, 16) for e in training], dtype=np.uint64)
    # pick in an order unrelated to the train/val hash split (sha256[:8]), so that the
    # holdout draws from both sides alike and val keeps its share
    for f in sorted(new, key=lambda f: f.sha256[32:]):
        if len(picked) >= quota:
            break
        # a holdout frame must not nearly duplicate a frame the model already trained on
        if f.drift and not (
            len(trained) and _distances(trained, int(f.dhash, 16)).min() <= near_dup_bits
        ):
            picked.append(f)
    chosen = {f.sha256 for f in picked}
    hold_hashes = [(f.sha256, int(f.dhash, 16)) for f in picked] + [
        (e.sha256, int(e.dhash, 16)) for e in holdout
    ]
    train, val, held_back = [], [], []
    for f in new:
        if f.sha256 in chosen:
            continue
        h = int(f.dhash, 16)
        near = next((s for s, o in hold_hashes if hamming(h, o) <= near_dup_bits), None)
        if near is not None:
            held_back.append((f.sha256, near))
        elif hash_share(f.sha256) < val_share:
            val.append(f.sha256)
        else:
            train.append(f.sha256)
    return SplitPlan(train, val, [f.sha256 for f in picked], held_back, present)

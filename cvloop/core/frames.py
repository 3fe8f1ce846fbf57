"""Frames and boxes: a frame's identity (content hash, perceptual hash), its labelled boxes,
its provenance record, and the pure rules that keep the holdout apart from training.

A frame's identity is the sha256 of its image bytes: the same frame is never stored twice,
and overlap between the holdout and training data is checked on it (and on a perceptual
hash, for near-duplicates). Dataset folders on disk are ``cvloop/adapters/datasets.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


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
    dhash: str | None = None  # hex; known already: the frame is not decoded again


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


class Hashed(Protocol):
    """What the overlap check reads of a frame (a :class:`FrameEntry`, or a frame still
    being imported): its id, content hash and perceptual hash (hex)."""

    @property
    def id(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def dhash(self) -> str: ...


def check_overlap(
    holdout: Sequence[Hashed], training: Sequence[Hashed], max_hamming: int
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

    @classmethod
    def from_dict(cls, d: dict) -> SplitPlan:
        """The plan as :func:`dataclasses.asdict` wrote it (JSON: pairs come back as lists)."""
        return cls(d["train"], d["val"], d["holdout"], [tuple(x) for x in d["held_back"]],
                   d["already_present"])  # fmt: skip


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

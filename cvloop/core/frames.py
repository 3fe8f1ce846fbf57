"""Frames and boxes: a frame's identity (content hash, perceptual hash), its labelled boxes,
its provenance record, and the pure rules that keep the holdout apart from training.

A frame's identity is the sha256 of its image bytes: the same frame is never stored twice,
and overlap between the holdout and training data is checked on it (and on a perceptual
hash, for near-duplicates). Dataset folders on disk are ``cvloop/adapters/datasets.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
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
    events: list[tuple[str, str]] = field(default_factory=list)  # (holdout, training) ids

    @property
    def clean(self) -> bool:
        return not self.exact and not self.near and not self.events

    def counts(self) -> dict[str, int]:
        """The leakage report: exact, near-duplicate and same-capture-event overlaps."""
        return {"exact": len(self.exact), "near_duplicate": len(self.near),
                "same_event": len(self.events)}  # fmt: skip


def _distances(hashes: np.ndarray, h: int) -> np.ndarray:
    """Hamming distance from the 64-bit hash ``h`` to each of ``hashes`` (uint64)."""
    x = np.bitwise_xor(hashes, np.uint64(h))
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


#: frames with no camera or capture time of their own (imported from a team's labeled set):
#: each is a capture event by itself
IMPORTED_CAMERA = "imported"


def capture_events(frames: Iterable[tuple[str, str, int]], gap_ms: int) -> dict[str, str]:
    """sha256 -> capture event, for ``(sha256, camera, ts_ms)`` frames: on one camera,
    frames whose capture times follow each other within ``gap_ms`` are one event (a burst,
    a scene; id ``camera@<first ts_ms>``). A frame with no camera of its own (imported), or
    with ``gap_ms`` 0, is an event by itself (id: its sha256)."""
    out: dict[str, str] = {}
    by_camera: dict[str, list[tuple[int, str]]] = {}
    for sha, camera, ts in frames:
        if gap_ms <= 0 or camera in ("", IMPORTED_CAMERA):
            out[sha] = sha
        else:
            by_camera.setdefault(camera, []).append((int(ts), sha))
    for camera, items in by_camera.items():
        start = prev = None
        for ts, sha in sorted(set(items)):
            if prev is None or ts - prev > gap_ms:
                start = ts
            out[sha] = f"{camera}@{start}"
            prev = ts
    return out


def event_share(event: str) -> float:
    """An event's place in [0, 1), like :func:`hash_share` for a frame: the train/val split
    keeps an event's frames together."""
    import hashlib

    if len(event) == 64 and "@" not in event:  # a frame that is an event by itself
        return hash_share(event)
    return hash_share(hashlib.sha256(event.encode()).hexdigest())


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
    holdout: Sequence[Hashed],
    training: Sequence[Hashed],
    max_hamming: int,
    event_gap_ms: int = 0,
    new: set[str] | None = None,
) -> Overlap:
    """Holdout frames that also appear in training: identical bytes, near-duplicates
    (perceptual hash within ``max_hamming`` bits), or another frame of the same capture
    event (:func:`capture_events`; frames that carry a camera and a capture time). With
    ``new`` (sha256s), an event overlap counts only where a new frame is in it: versions
    made before events were checked are not refused again for what they already hold."""
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
    events = []
    if event_gap_ms > 0:
        frames = [(e.sha256, getattr(e, "camera", ""), getattr(e, "ts_ms", 0))
                  for e in [*training, *holdout]]  # fmt: skip
        ev = capture_events(frames, event_gap_ms)
        trained: dict[str, list] = {}
        for e in training:
            if "@" in ev[e.sha256]:
                trained.setdefault(ev[e.sha256], []).append(e)
        for e in holdout:
            mates = trained.get(ev[e.sha256]) if e.sha256 not in train_sha else None
            if mates and (new is None or e.sha256 in new or any(m.sha256 in new for m in mates)):
                events.append((e.id, mates[0].id))
    return Overlap(exact, near, events)


@dataclass(frozen=True)
class Candidate:
    """A reviewed, valid frame that may join a dataset version."""

    sha256: str
    dhash: str
    drift: bool  # from a drift-flagged slice (camera or class of the triggering event)
    camera: str = ""
    ts_ms: int = 0


@dataclass(frozen=True)
class SplitPlan:
    train: list[str]
    val: list[str]
    holdout: list[str]
    held_back: list[
        tuple[str, str]
    ]  # (frame, holdout frame it nearly duplicates or shares a capture event with)
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
    event_gap_ms: int = 0,
) -> SplitPlan:
    """Where each new frame goes (deterministic: a re-run plans the same).

    Up to ``holdout_quota`` drift frames, and at most ``max_drift_share`` of the new drift
    frames (the rest must teach the model), go to the holdout (never one already used for
    training, nor one of a capture event the model trained on), a capture event whole where
    it fits (:func:`capture_events`, ``event_gap_ms``); frames that nearly duplicate a
    holdout frame, or share its capture event, are held back from training (they stay in
    Label Studio) so the holdout never leaks; the rest split train/val by event hash (an
    event's frames stay together).
    """
    in_train = {e.sha256 for e in training}
    in_holdout = {e.sha256 for e in holdout}
    present = [f.sha256 for f in frames if f.sha256 in in_train | in_holdout]
    new = sorted(
        (f for f in frames if f.sha256 not in in_train | in_holdout), key=lambda f: f.sha256
    )
    events = capture_events([(e.sha256, e.camera, e.ts_ms) for e in [*training, *holdout]]
                            + [(f.sha256, f.camera, f.ts_ms) for f in new], event_gap_ms)  # fmt: skip
    trained_events = {events[e.sha256] for e in training}
    held_events = {events[e.sha256]: e.sha256 for e in holdout}  # event -> a holdout frame
    quota = min(holdout_quota, int(sum(f.drift for f in new) * max_drift_share))
    trained = np.array([int(e.dhash, 16) for e in training], dtype=np.uint64)

    def eligible(f: Candidate) -> bool:
        # a holdout frame must not nearly duplicate a frame the model already trained on
        near = len(trained) and _distances(trained, int(f.dhash, 16)).min() <= near_dup_bits
        return f.drift and not near and events[f.sha256] not in trained_events

    # whole capture events, in an order unrelated to the train/val split (so the holdout
    # draws from both sides alike); then, if the quota is not full, part of a larger event
    # (its other frames are held back)
    by_event: dict[str, list[Candidate]] = {}
    for f in sorted(new, key=lambda f: f.sha256[32:]):
        if eligible(f):
            by_event.setdefault(events[f.sha256], []).append(f)
    picked: list[Candidate] = []
    for group in by_event.values():
        if len(picked) + len(group) <= quota:
            picked += group
    taken = {events[f.sha256] for f in picked}
    for ev, group in by_event.items():
        if ev not in taken and len(picked) < quota:
            picked += group[: quota - len(picked)]
    chosen = {f.sha256 for f in picked}
    for f in picked:
        held_events.setdefault(events[f.sha256], f.sha256)
    hold_shas = [f.sha256 for f in picked] + [e.sha256 for e in holdout]
    hold = np.array([int(f.dhash, 16) for f in picked] + [int(e.dhash, 16) for e in holdout],
                    dtype=np.uint64)  # fmt: skip
    train, val, held_back = [], [], []
    for f in new:
        if f.sha256 in chosen:
            continue
        near = held_events.get(events[f.sha256])
        if near is None and len(hold):
            close = np.flatnonzero(_distances(hold, int(f.dhash, 16)) <= near_dup_bits)
            near = hold_shas[int(close[0])] if len(close) else None
        if near is not None:
            held_back.append((f.sha256, near))
        elif event_share(events[f.sha256]) < val_share:
            val.append(f.sha256)
        else:
            train.append(f.sha256)
    return SplitPlan(train, val, [f.sha256 for f in picked], held_back, present)

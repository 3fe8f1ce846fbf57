"""Runbook step 4: how much reviewers change the pre-annotations, and when to stop waiting.

For each reviewed frame the pre-annotation (the champion's boxes at conf >= 0.5) and the
submitted annotation are matched greedily by IoU (>= ``iou_match``, labels ignored), and
every pre-annotated or final box counts once as

* ``kept`` — matched, same label, IoU >= ``moved_iou``;
* ``moved`` — matched, same label, IoU below ``moved_iou``;
* ``relabelled`` — matched, another label (counted for the predicted label);
* ``deleted`` — a pre-annotated box with no match (a false positive);
* ``added`` — a final box with no match (a miss; counted for the final label).

A class's **edit rate** is ``(moved + relabelled + deleted + added) / all its boxes``. It is
computed over successive windows of ``window_frames`` reviewed frames that hold the class
(in review order). A class is **stable** when it has at least ``frames_per_class`` reviewed
frames and its last ``stable_windows`` window rates lie within ``stable_tolerance`` of each
other: more review would not tell us more about label quality.

The edit rate is a label-quality signal (how much the reviewers had to fix) and a
model-quality signal (how wrong the champion is on the drifted slices).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cvloop.core.frames import LabelBox

EDIT_KINDS = ("moved", "relabelled", "deleted", "added")
KINDS = ("kept", *EDIT_KINDS)


def iou(a: LabelBox, b: LabelBox) -> float:
    ax1, ay1, ax2, ay2 = a.cx - a.w / 2, a.cy - a.h / 2, a.cx + a.w / 2, a.cy + a.h / 2
    bx1, by1, bx2, by2 = b.cx - b.w / 2, b.cy - b.h / 2, b.cx + b.w / 2, b.cy + b.h / 2
    iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    ih = max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    union = a.w * a.h + b.w * b.h - inter
    return inter / union if union > 0 else 0.0


def compare_boxes(
    predicted: Sequence[LabelBox],
    final: Sequence[LabelBox],
    iou_match: float,
    moved_iou: float,
) -> dict[str, dict[str, int]]:
    """Per class: how many boxes were kept, moved, relabelled, deleted, added."""
    pairs = sorted(
        (
            (iou(p, f), i, j)
            for i, p in enumerate(predicted)
            for j, f in enumerate(final)
            if iou(p, f) >= iou_match
        ),
        reverse=True,
    )
    used_p: set[int] = set()
    used_f: set[int] = set()
    out: dict[str, dict[str, int]] = {}

    def count(label: str, kind: str) -> None:
        out.setdefault(label, dict.fromkeys(KINDS, 0))[kind] += 1

    for overlap, i, j in pairs:
        if i in used_p or j in used_f:
            continue
        used_p.add(i)
        used_f.add(j)
        p, f = predicted[i], final[j]
        if p.label != f.label:
            count(p.label, "relabelled")
        elif overlap < moved_iou:
            count(p.label, "moved")
        else:
            count(p.label, "kept")
    for i, p in enumerate(predicted):
        if i not in used_p:
            count(p.label, "deleted")
    for j, f in enumerate(final):
        if j not in used_f:
            count(f.label, "added")
    return out


def edit_rate(counts: dict[str, int]) -> float:
    total = sum(counts.get(k, 0) for k in KINDS)
    return sum(counts.get(k, 0) for k in EDIT_KINDS) / total if total else 0.0


def frame_edits(counts: dict[str, dict[str, int]]) -> dict[str, int]:
    """A frame's edit counts summed over classes (for the dataset manifest)."""
    return {k: sum(c.get(k, 0) for c in counts.values()) for k in KINDS}


@dataclass
class ClassProgress:
    """Review progress of one class."""

    name: str
    frames: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    windows: list[float] = field(default_factory=list)  # edit rate per complete window
    stable: bool = False

    @property
    def rate(self) -> float:
        return edit_rate(self.counts)


@dataclass
class ReviewProgress:
    total_tasks: int
    reviewed: int
    watched: list[str]  # the classes whose stability decides (drift classes, else all)
    classes: dict[str, ClassProgress]

    @property
    def all_reviewed(self) -> bool:
        return self.total_tasks > 0 and self.reviewed >= self.total_tasks

    @property
    def stable(self) -> bool:
        watched = [self.classes[c] for c in self.watched if c in self.classes]
        return bool(watched) and all(c.stable for c in watched)

    def as_dict(self) -> dict:
        return {
            "total_tasks": self.total_tasks,
            "reviewed": self.reviewed,
            "watched": self.watched,
            "stable": self.stable,
            "all_reviewed": self.all_reviewed,
            "classes": {
                n: {
                    "frames": c.frames,
                    "edit_rate": round(c.rate, 4),
                    "windows": [round(w, 4) for w in c.windows],
                    "stable": c.stable,
                    **c.counts,
                }
                for n, c in self.classes.items()
            },
        }


def review_progress(
    reviewed: Iterable[tuple[Sequence[LabelBox], Sequence[LabelBox]]],
    total_tasks: int,
    classes: Sequence[str],
    watch: Sequence[str],
    *,
    window_frames: int,
    stable_windows: int,
    stable_tolerance: float,
    frames_per_class: int,
    iou_match: float,
    moved_iou: float,
) -> ReviewProgress:
    """Edit rates per class over successive windows of reviewed frames (in review order)."""
    progress = {c: ClassProgress(c) for c in classes}
    pending: dict[str, dict[str, int]] = {c: dict.fromkeys(KINDS, 0) for c in classes}
    pending_frames = dict.fromkeys(classes, 0)
    n = 0
    for predicted, final in reviewed:
        n += 1
        for label, counts in compare_boxes(predicted, final, iou_match, moved_iou).items():
            cp = progress.setdefault(label, ClassProgress(label))
            pend = pending.setdefault(label, dict.fromkeys(KINDS, 0))
            pending_frames.setdefault(label, 0)
            cp.frames += 1
            for k, v in counts.items():
                cp.counts[k] += v
                pend[k] += v
            pending_frames[label] += 1
            if pending_frames[label] == window_frames:
                cp.windows.append(edit_rate(pend))
                pending[label] = dict.fromkeys(KINDS, 0)
                pending_frames[label] = 0
    for cp in progress.values():
        last = cp.windows[-stable_windows:]
        cp.stable = (
            cp.frames >= frames_per_class
            and len(last) == stable_windows
            and max(last) - min(last) <= stable_tolerance
        )
    watched = [c for c in watch if c in progress] or [c for c in classes if progress[c].frames]
    return ReviewProgress(total_tasks, n, watched, progress)


def decide(
    progress: ReviewProgress, *, operator_go: bool = False, deadline_passed: bool = False
) -> tuple[bool, str]:
    """Whether the flow may go on, and why (or why not)."""
    if progress.all_reviewed:
        return True, f"all {progress.total_tasks} tasks reviewed"
    if progress.stable:
        return True, f"edit rate stable for {', '.join(progress.watched)}"
    if operator_go:
        return True, "an operator said go"
    if deadline_passed:
        if progress.reviewed:
            return True, f"review deadline passed with {progress.reviewed} frames reviewed"
        return False, "review deadline passed with no frame reviewed"
    if not progress.reviewed:
        return False, f"no frame reviewed yet (0/{progress.total_tasks})"
    waiting = [
        f"{c}: {progress.classes[c].frames} frames, windows "
        f"{[round(w, 3) for w in progress.classes[c].windows[-3:]]}"
        for c in progress.watched
        if not progress.classes[c].stable
    ]
    return False, "waiting for a stable edit rate (" + "; ".join(waiting or ["no frames"]) + ")"

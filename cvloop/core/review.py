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

**Inter-annotator agreement** (seeds 001/002): Label Studio gives a share of each queue to two
reviewers. On those frames the two annotations are matched the same way (IoU >=
``iou_match``, labels ignored), and a class's agreement is the F1 of the two reviewers'
boxes: ``2 * (matched pairs with that label on both sides) / (boxes of that class by either
reviewer)``. A class with at least ``min_boxes`` such boxes and an agreement below
``min_agreement`` holds the review while any frame where the two disagree on it is
unresolved (no annotation marked ground truth): disagreement usually means the labeling
guide is ambiguous, and training on a coin flip between two readings teaches the model
neither.
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


def match_boxes(
    a: Sequence[LabelBox], b: Sequence[LabelBox], iou_match: float
) -> list[tuple[float, int, int]]:
    """Greedy one-to-one matching by IoU (highest first, labels ignored): (IoU, i, j)."""
    pairs = sorted(
        ((o, i, j) for i, x in enumerate(a) for j, y in enumerate(b)
         if (o := iou(x, y)) >= iou_match),
        reverse=True,
    )  # fmt: skip
    used_a: set[int] = set()
    used_b: set[int] = set()
    out = []
    for overlap, i, j in pairs:
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        out.append((overlap, i, j))
    return out


def pair_agreement(
    a: Sequence[LabelBox], b: Sequence[LabelBox], iou_match: float
) -> dict[str, tuple[int, int]]:
    """Two reviewers' annotations of one frame, per class: (boxes both drew with that label,
    boxes of that class drawn by either reviewer)."""
    out: dict[str, list[int]] = {}
    for box in (*a, *b):
        out.setdefault(box.label, [0, 0])[1] += 1
    for _, i, j in match_boxes(a, b, iou_match):
        if a[i].label == b[j].label:
            out[a[i].label][0] += 1
    return {k: (v[0], v[1]) for k, v in out.items()}


def compare_boxes(
    predicted: Sequence[LabelBox],
    final: Sequence[LabelBox],
    iou_match: float,
    moved_iou: float,
) -> dict[str, dict[str, int]]:
    """Per class: how many boxes were kept, moved, relabelled, deleted, added."""
    out: dict[str, dict[str, int]] = {}

    def count(label: str, kind: str) -> None:
        out.setdefault(label, dict.fromkeys(KINDS, 0))[kind] += 1

    matched = match_boxes(predicted, final, iou_match)
    used_p = {i for _, i, _ in matched}
    used_f = {j for _, _, j in matched}
    for overlap, i, j in matched:
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
    # two reviewers on one frame: frames, matched pairs, boxes by either, frames unresolved
    double_frames: int = 0
    agreed: int = 0
    double_boxes: int = 0
    disagreements: list[int] = field(default_factory=list)  # task ids, unresolved

    @property
    def rate(self) -> float:
        return edit_rate(self.counts)

    @property
    def agreement(self) -> float | None:
        """F1 between the two reviewers' boxes of this class (None: never double-labeled)."""
        return 2 * self.agreed / self.double_boxes if self.double_boxes else None


@dataclass(frozen=True)
class DoubleLabel:
    """A frame two reviewers annotated: their boxes, and whether someone settled it (an
    annotation marked ground truth in Label Studio)."""

    task_id: int
    first: Sequence[LabelBox]
    second: Sequence[LabelBox]
    resolved: bool = False


@dataclass(frozen=True)
class AgreementRule:
    min_agreement: float  # F1 between two reviewers' boxes of a class
    min_boxes: int  # ... judged once the double-labeled frames hold this many of its boxes
    iou_match: float


@dataclass
class ReviewProgress:
    total_tasks: int
    reviewed: int
    watched: list[str]  # the classes whose stability decides (drift classes, else all)
    classes: dict[str, ClassProgress]
    double_frames: int = 0  # frames two reviewers annotated
    rule: AgreementRule | None = None

    def disagreeing(self) -> list[ClassProgress]:
        """Classes whose agreement is measured, below the rule, with frames unresolved."""
        r = self.rule
        if r is None:
            return []
        return [
            c for c in self.classes.values()
            if c.double_boxes >= r.min_boxes and c.agreement is not None
            and c.agreement < r.min_agreement and c.disagreements
        ]  # fmt: skip

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
            "double_frames": self.double_frames,
            "min_agreement": self.rule.min_agreement if self.rule else None,
            "disagreeing": [c.name for c in self.disagreeing()],
            "classes": {
                n: {
                    "frames": c.frames,
                    "edit_rate": round(c.rate, 4),
                    "windows": [round(w, 4) for w in c.windows],
                    "stable": c.stable,
                    **c.counts,
                    "agreement": None if c.agreement is None else round(c.agreement, 4),
                    "double_frames": c.double_frames,
                    "double_boxes": c.double_boxes,
                    "disagreements": c.disagreements,
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
    doubles: Iterable[DoubleLabel] = (),
    agreement: AgreementRule | None = None,
) -> ReviewProgress:
    """Edit rates per class over successive windows of reviewed frames (in review order), and
    the agreement of two reviewers per class on the ``doubles``."""
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
    n_double = 0
    for d in doubles:
        n_double += 1
        for label, (agreed, boxes) in pair_agreement(
            d.first, d.second, agreement.iou_match if agreement else iou_match
        ).items():
            cp = progress.setdefault(label, ClassProgress(label))
            cp.double_frames += 1
            cp.agreed += agreed
            cp.double_boxes += boxes
            if 2 * agreed < boxes and not d.resolved:
                cp.disagreements.append(d.task_id)
    return ReviewProgress(total_tasks, n, watched, progress, n_double, agreement)


def _disagreement(progress: ReviewProgress) -> str:
    parts = [
        f"{c.name}: {c.agreement:.2f} over {c.double_boxes} boxes on {c.double_frames} frames, "
        f"{len(c.disagreements)} unresolved (tasks {', '.join(map(str, c.disagreements[:5]))}"
        f"{' ...' if len(c.disagreements) > 5 else ''})"
        for c in progress.disagreeing()
    ]
    floor = progress.rule.min_agreement if progress.rule else 0.0
    return f"reviewers disagree (agreement below {floor:.2f}): " + "; ".join(parts)


def decide(
    progress: ReviewProgress, *, operator_go: bool = False, deadline_passed: bool = False
) -> tuple[bool, str]:
    """Whether the flow may go on, and why (or why not).

    Reviewers who disagree on a class hold the review, however complete or stable it is,
    until the frames are settled; only an operator's go or the deadline override that (and
    the reason says so)."""
    if progress.disagreeing():
        held = _disagreement(progress)
        if operator_go:
            return True, f"an operator said go ({held})"
        if deadline_passed:
            return True, f"review deadline passed with {progress.reviewed} frames reviewed ({held})"
        return False, held
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

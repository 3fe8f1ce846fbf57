"""The canary's quality evidence: both models on the **same** production frames.

A two-sample test between the champion's and the challenger's confidences cannot tell a
better model from a worse one (a retrained model is *meant* to move that distribution), so
the rollout judges quality on paired frames instead:

* **pairing** — a sample of the frames each model served in the canary window is scored by
  the other model too. Per class, how many of the champion's *confident* boxes (conf >=
  ``confident_floor``) the challenger still finds (same class, IoU >= ``match_iou``, conf >=
  ``match_conf``): a worse model loses them, a better one keeps them (and finds more, which
  is reported the other way round: the challenger's confident boxes the champion finds).
* **labels** — where reviewed labels exist for frames of the window, each model's mAP on
  them; they beat the pairing (they are the truth, the pairing only assumes the champion's
  confident boxes are mostly right).

A better model is *meant* to drop the champion's confident false positives, so a kept share
is held against what the champion's own precision explains: the allowance of a class is
the champion's precision at the confident floor on the labeled holdout (the lower bound of
its Wilson interval) minus the tolerance ``max_loss`` (:class:`Allowance`). Measured on the
demo's tiny champion, 32 of the 36 confident barrel boxes its better successor dropped
were wrong; a kept share of 78 % there is an improvement, not a loss.

A kept share is judged with its Wilson interval: **breach** when even its upper bound is
below the allowance (the loss is beyond what false positives and noise explain), **ok**
when the share itself is at or above it, **inconclusive** in between or with fewer than
``min_boxes`` confident boxes (the stage holds: more traffic narrows the interval; it never
promotes).
Pure functions, no I/O: ``tasks/rollout.py`` gathers the frames and runs the models.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from cvloop.core.calibration import mark_correct
from cvloop.core.frames import LabelBox

Boxes = Sequence[tuple[LabelBox, float]]  # (box, confidence)

POOL = "all classes"


@dataclass(frozen=True)
class PairedFrame:
    """One production frame with both models' boxes (one from the log, one re-scored)."""

    frame_key: str
    camera: str
    group: str
    served_by: str  # "challenger" | "champion"
    champion: Boxes
    challenger: Boxes


@dataclass
class ClassPairing:
    """Per class: the champion's confident boxes the challenger keeps, and the reverse."""

    champion_confident: int = 0
    kept_by_challenger: int = 0
    challenger_confident: int = 0
    found_by_champion: int = 0

    @property
    def kept_share(self) -> float | None:
        n = self.champion_confident
        return self.kept_by_challenger / n if n else None

    @property
    def found_share(self) -> float | None:
        n = self.challenger_confident
        return self.found_by_champion / n if n else None

    def add(self, other: ClassPairing) -> None:
        self.champion_confident += other.champion_confident
        self.kept_by_challenger += other.kept_by_challenger
        self.challenger_confident += other.challenger_confident
        self.found_by_champion += other.found_by_champion


def _kept(reference: Boxes, other: Boxes, floor: float, match_conf: float, iou: float):
    """Per class: (confident reference boxes, how many of them ``other`` finds)."""
    confident = [(b, c) for b, c in reference if c >= floor]
    truth = [b for b, c in other if c >= match_conf]
    out: dict[str, list[int]] = {}
    for (box, _), (_, hit) in zip(
        sorted(confident, key=lambda p: -p[1]), mark_correct(confident, truth, iou), strict=True
    ):
        row = out.setdefault(box.label, [0, 0])
        row[0] += 1
        row[1] += int(hit)
    return out


def pair_classes(
    frames: Iterable[PairedFrame], *, confident_floor: float, match_conf: float, match_iou: float
) -> dict[str, ClassPairing]:
    """Per-class pairing counts over ``frames`` (classes sorted by name)."""
    out: dict[str, ClassPairing] = {}
    for f in frames:
        for label, (n, k) in _kept(
            f.champion, f.challenger, confident_floor, match_conf, match_iou
        ).items():
            row = out.setdefault(label, ClassPairing())
            row.champion_confident += n
            row.kept_by_challenger += k
        for label, (n, k) in _kept(
            f.challenger, f.champion, confident_floor, match_conf, match_iou
        ).items():
            row = out.setdefault(label, ClassPairing())
            row.challenger_confident += n
            row.found_by_champion += k
    return dict(sorted(out.items()))


def kept_by_camera(frames: Iterable[PairedFrame], **match) -> dict[str, dict]:
    """Per camera: the champion's confident boxes and how many the challenger keeps."""
    out: dict[str, dict] = {}
    for f in frames:
        row = out.setdefault(f.camera, {"champion_confident": 0, "kept_by_challenger": 0})
        for c in pair_classes([f], **match).values():
            row["champion_confident"] += c.champion_confident
            row["kept_by_challenger"] += c.kept_by_challenger
    return dict(sorted(out.items()))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a share ``k / n`` (95 % by default)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


@dataclass(frozen=True)
class QualityCheck:
    """One judged share: ``status`` ok | breach | inconclusive."""

    name: str
    status: str
    detail: str


@dataclass
class Quality:
    """The quality evidence of one canary window and what it says.

    ``evidence``: ``labels`` (reviewed labels decided), ``pairing`` (the paired re-scoring
    decided) or ``none`` (neither had enough to judge: inconclusive)."""

    status: str  # ok | breach | inconclusive
    evidence: str
    checks: list[QualityCheck] = field(default_factory=list)
    frames: int = 0  # paired frames
    classes: dict[str, dict] = field(default_factory=dict)  # per-class pairing numbers
    labels: dict = field(default_factory=dict)  # mAP of each model on labeled frames
    note: str = ""
    reported: list[QualityCheck] = field(default_factory=list)  # shown, not deciding
    by_camera: dict[str, dict] = field(default_factory=dict)  # kept shares per camera

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Allowance:
    """The kept share a challenger must reach for one class: the champion's own precision
    at the confident floor, measured on the labeled holdout (its Wilson lower bound: a
    better model is *meant* to drop the champion's confident false positives), minus the
    tolerance ``max_loss``. Without a holdout measurement the champion's confident boxes are
    taken as right (precision 1), the strictest reading."""

    threshold: float
    why: str


def allowance(precision: tuple[int, int] | None, max_loss: float, where: str) -> Allowance:
    """``precision``: (right, confident) boxes of the champion on ``where`` (the holdout)."""
    if not precision or not precision[1]:
        return Allowance(1.0 - max_loss, f"no {where} measure of the champion's precision: "
                         f"its confident boxes are taken as right, minus {max_loss:.0%}")  # fmt: skip
    right, n = precision
    lo = wilson(right, n)[0]
    return Allowance(
        max(0.0, lo - max_loss),
        f"the champion's own confident boxes are right {right}/{n} on {where} (>= {lo:.0%}), "
        f"minus {max_loss:.0%}",
    )


def _share_check(name: str, k: int, n: int, allow: Allowance, min_boxes: int) -> QualityCheck:
    lo, hi = wilson(k, n)
    what = f"{k}/{n} of the champion's confident boxes kept"
    if n < min_boxes:
        return QualityCheck(name, "inconclusive", f"{what}: {min_boxes} needed to judge")
    share = k / n
    span = (
        f"{share:.1%} (95 % CI {lo:.1%}-{hi:.1%}; at least {allow.threshold:.0%} allowed: "
        f"{allow.why})"
    )
    if hi < allow.threshold:
        return QualityCheck(name, "breach", f"{what} = {span}")
    if share >= allow.threshold:
        return QualityCheck(name, "ok", f"{what} = {span}")
    return QualityCheck(name, "inconclusive", f"{what} = {span}: more traffic will tell")


def judge_pairing(
    classes: Mapping[str, ClassPairing],
    frames: int,
    q,
    precision: Mapping[str, tuple[int, int]] | None = None,
    where: str = "the holdout",
) -> Quality:
    """Per class (``q.min_boxes`` confident champion boxes or more) and over all classes
    pooled (so a rare class is still judged inside the pool); ``q`` is
    ``rollout.canary.quality``, ``precision`` the champion's (right, confident) boxes per
    class at ``q.confident_floor`` on ``where`` (see :class:`Allowance`)."""
    precision = precision or {}
    checks: list[QualityCheck] = []
    pool = ClassPairing()
    pooled = [0, 0]
    for label, c in classes.items():
        pool.add(c)
        right, n = precision.get(label, (0, 0))
        pooled[0] += right
        pooled[1] += n
        if c.champion_confident >= q.min_boxes:
            allow = allowance(precision.get(label), q.max_loss, where)
            checks.append(_share_check(f"kept:{label}", c.kept_by_challenger,
                                       c.champion_confident, allow, q.min_boxes))  # fmt: skip
    allow = allowance(tuple(pooled) if pooled[1] else None, q.max_loss, where)
    checks.insert(0, _share_check(f"kept:{POOL}", pool.kept_by_challenger,
                                  pool.champion_confident, allow, q.min_boxes))  # fmt: skip
    statuses = {c.status for c in checks}
    status = (
        "breach" if "breach" in statuses else "inconclusive" if "inconclusive" in statuses else "ok"
    )
    small = [k for k, c in classes.items() if 0 < c.champion_confident < q.min_boxes]
    note = (
        f"judged only in the pool (fewer than {q.min_boxes} confident champion boxes): "
        + ", ".join(small)
        if small
        else ""
    )
    rows = {
        k: {**asdict(c), "kept_share": c.kept_share, "found_share": c.found_share,
            "champion_precision": list(precision[k]) if k in precision else None}
        for k, c in classes.items()
    }  # fmt: skip
    return Quality(status, "pairing" if status != "inconclusive" else "none", checks, frames,
                   rows, note=note)  # fmt: skip


def champion_precision(
    frames: Iterable[tuple[Boxes, Sequence[LabelBox]]], floor: float, iou: float
) -> dict[str, tuple[int, int]]:
    """Per class: (right, confident) of a model's boxes at conf >= ``floor`` on labeled
    frames (``(predicted boxes, labels)`` each)."""
    out: dict[str, list[int]] = {}
    for pred, truth in frames:
        confident = [(b, c) for b, c in pred if c >= floor]
        for (box, _), (_, hit) in zip(
            sorted(confident, key=lambda p: -p[1]), mark_correct(confident, truth, iou), strict=True
        ):
            row = out.setdefault(box.label, [0, 0])
            row[0] += int(hit)
            row[1] += 1
    return {k: (v[0], v[1]) for k, v in sorted(out.items())}


# ---------------------------------------------------------------------------------------------
# labeled frames: mAP of each model
# ---------------------------------------------------------------------------------------------
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def _ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """COCO's AP: the mean over 101 recall points of the best precision at that recall or
    above (0 where the recall is never reached)."""
    envelope = np.flip(np.maximum.accumulate(np.flip(precision)))
    idx = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
    return float(np.where(idx < len(recall), envelope[np.minimum(idx, len(recall) - 1)], 0).mean())


def mean_ap(
    frames: Iterable[tuple[Boxes, Sequence[LabelBox]]], classes: Sequence[str] | None = None
) -> dict:
    """mAP50-95, mAP50 and per-class AP50-95 of predictions against labels.

    Args:
        frames: ``(predicted boxes with confidence, labeled boxes)`` per frame.
        classes: the classes to average over (default: every class with a labeled box).
    """
    frames = list(frames)
    gt: dict[str, int] = {}
    for _, truth in frames:
        for b in truth:
            gt[b.label] = gt.get(b.label, 0) + 1
    names = [c for c in (classes or sorted(gt)) if gt.get(c)]
    ap = np.zeros((len(names), len(IOU_THRESHOLDS)))
    for j, t in enumerate(IOU_THRESHOLDS):
        hits: dict[str, list[tuple[float, bool]]] = {c: [] for c in names}
        for pred, truth in frames:
            for (box, _), pair in zip(
                sorted(pred, key=lambda p: -p[1]), mark_correct(pred, truth, float(t)), strict=True
            ):
                if box.label in hits:
                    hits[box.label].append(pair)
        for i, c in enumerate(names):
            if not hits[c]:
                continue
            arr = sorted(hits[c], key=lambda p: -p[0])
            tp = np.cumsum([h for _, h in arr])
            fp = np.cumsum([not h for _, h in arr])
            ap[i, j] = _ap(tp / gt[c], tp / np.maximum(tp + fp, 1e-9))
    per_class = {c: float(ap[i].mean()) for i, c in enumerate(names)}
    return {
        "map50_95": float(ap.mean()) if names else None,
        "map50": float(ap[:, 0].mean()) if names else None,
        "per_class_ap50_95": per_class,
        "frames": len(frames),
        "boxes": sum(gt.values()),
    }


def judge_labels(
    challenger: Mapping, champion: Mapping, q, *, source: str = "reviewed labels"
) -> Quality | None:
    """The labeled frames decide when there are ``q.labels_min_frames`` of them: the
    challenger's mAP50-95 may not fall below the champion's by more than
    ``q.labels_map_tolerance_points``. None when there are too few to decide."""
    n = int(champion.get("frames") or 0)
    if n < q.labels_min_frames or champion.get("map50_95") is None:
        return None
    a, b = float(challenger.get("map50_95") or 0.0), float(champion["map50_95"])
    drop = (b - a) * 100
    ok = drop <= q.labels_map_tolerance_points
    check = QualityCheck(
        "labels:map50_95",
        "ok" if ok else "breach",
        f"challenger {a:.3f} vs champion {b:.3f} on {n} frames with {source} "
        f"({champion.get('boxes', 0)} boxes; drop {drop:+.1f} points, at most "
        f"{q.labels_map_tolerance_points:g} allowed)",
    )
    return Quality(
        "ok" if ok else "breach",
        "labels",
        [check],
        labels={
            "frames": n,
            "source": source,
            "challenger": dict(challenger),
            "champion": dict(champion),
        },
    )


def decide_quality(pairing: Quality, labels: Quality | None) -> Quality:
    """Labels beat the pairing; the pairing stays in the report either way."""
    if labels is None:
        return pairing
    return Quality(
        labels.status,
        "labels",
        labels.checks,
        pairing.frames,
        pairing.classes,
        labels.labels,
        pairing.note,
        reported=pairing.checks,
        by_camera=pairing.by_camera,
    )

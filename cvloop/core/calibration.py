"""Calibration of a detector: does a box at confidence 0.8 turn out right 80 % of the time?

Each predicted box is marked correct when it matches a ground-truth box of the same class
at IoU >= ``iou`` (greedy, most confident first, each truth box used once). The expected
calibration error (ECE) is the frame-weighted gap between mean confidence and accuracy
over ``bins`` equal-width confidence bins. Champion and challenger are compared on it in
the gate report (runbook step 7).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from cvloop.core.frames import LabelBox
from cvloop.core.review import iou as box_iou


def mark_correct(
    predicted: Sequence[tuple[LabelBox, float]], truth: Sequence[LabelBox], iou: float = 0.5
) -> list[tuple[float, bool]]:
    """(confidence, correct) for each predicted box of one frame."""
    used: set[int] = set()
    out = []
    for box, conf in sorted(predicted, key=lambda p: -p[1]):
        best, best_j = 0.0, -1
        for j, t in enumerate(truth):
            if j in used or t.label != box.label:
                continue
            o = box_iou(box, t)
            if o > best:
                best, best_j = o, j
        hit = best >= iou
        if hit:
            used.add(best_j)
        out.append((float(conf), hit))
    return out


def restrict(
    predicted: Sequence[tuple[LabelBox, float]], truth: Sequence[LabelBox], only: Sequence[str]
) -> tuple[list[tuple[LabelBox, float]], list[LabelBox]]:
    """One frame's predicted and true boxes of the classes ``only`` (a challenger's ECE over
    the classes its champion knows, after a class was added)."""
    keep = set(only)
    return [p for p in predicted if p[0].label in keep], [t for t in truth if t.label in keep]


def expected_calibration_error(
    frames: Iterable[tuple[Sequence[tuple[LabelBox, float]], Sequence[LabelBox]]],
    bins: int = 10,
    iou: float = 0.5,
) -> float | None:
    """ECE over all predicted boxes of ``(predictions, truth)`` frames; None without boxes."""
    pairs = [p for pred, truth in frames for p in mark_correct(pred, truth, iou)]
    if not pairs:
        return None
    conf = np.array([c for c, _ in pairs])
    correct = np.array([h for _, h in pairs], dtype=float)
    idx = np.clip((conf * bins).astype(int), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(conf[m].mean() - correct[m].mean())
    return float(ece)

"""Calibration of a detector: does a box at confidence 0.8 turn out right 80 % of the time?

Each predicted box is marked correct when it matches a ground-truth box of the same class
at IoU >= ``iou`` (greedy, most confident first, each truth box used once). The expected
calibration error (ECE) is the frame-weighted gap between mean confidence and accuracy
over ``bins`` equal-width confidence bins. Champion and challenger are compared on it in
the gate report (runbook step 7).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from cvloop.datasets import LabelBox
from cvloop.review import iou as box_iou


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


def yolo_split_frames(data_yaml: Path, split: str = "val") -> list[tuple[Path, Path]]:
    """(image, label file) pairs of a split of a YOLO ``data.yaml`` (folder layout)."""
    import yaml

    spec = yaml.safe_load(Path(data_yaml).read_text())
    images = Path(data_yaml).parent / str(spec[split])
    labels = Path(str(images).replace(f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"))
    return [
        (img, labels / f"{img.stem}.txt")
        for img in sorted(images.iterdir())
        if img.suffix.lower() in (".jpg", ".jpeg", ".png")
    ]


def read_yolo_labels(path: Path, classes: Sequence[str]) -> list[LabelBox]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            c, cx, cy, w, h = line.split()[:5]
            out.append(LabelBox(classes[int(c)], float(cx), float(cy), float(w), float(h)))
    return out


def model_ece(
    onnx_path: Path,
    classes: Sequence[str],
    imgsz: int,
    data_yaml: Path,
    *,
    conf: float = 0.25,
    bins: int = 10,
    iou: float = 0.5,
    batch: int = 16,
) -> float | None:
    """ECE of an exported model on a YOLO evaluation set, at the serving threshold ``conf``."""
    import cv2

    from cvloop.detector import OnnxDetector

    det = OnnxDetector(onnx_path, list(classes), imgsz)
    pairs = yolo_split_frames(Path(data_yaml))
    frames = []
    for i in range(0, len(pairs), batch):
        chunk = pairs[i : i + batch]
        images = [cv2.cvtColor(cv2.imread(str(img)), cv2.COLOR_BGR2RGB) for img, _ in chunk]
        for (_, lbl), d in zip(chunk, det.predict(images, conf=conf), strict=True):
            pred = [
                (LabelBox(classes[int(c)], *map(float, box)), float(s))
                for box, s, c in zip(d.cxcywh(), d.scores, d.classes, strict=True)
            ]
            frames.append((pred, read_yolo_labels(lbl, classes)))
    return expected_calibration_error(frames, bins=bins, iou=iou)

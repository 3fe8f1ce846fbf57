"""Scoring a model on labelled frames outside Ultralytics' validator: calibration error of
the served ONNX model (champion and challenger on the same frames)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cvloop.adapters.datasets import read_yolo_labels, yolo_split_frames
from cvloop.core.calibration import expected_calibration_error
from cvloop.core.frames import LabelBox


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

    from cvloop.adapters.detector import OnnxDetector

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

"""Detector calibration: matching predictions to truth, and the expected calibration error."""

from __future__ import annotations

import pytest

from cvloop.core.calibration import expected_calibration_error, mark_correct, restrict
from cvloop.core.frames import LabelBox

T1 = LabelBox("crate", 0.3, 0.3, 0.2, 0.2)
T2 = LabelBox("cone", 0.7, 0.7, 0.2, 0.2)


def test_mark_correct_matches_class_and_iou_once():
    preds = [
        (LabelBox("crate", 0.31, 0.3, 0.2, 0.2), 0.9),  # hits T1
        (LabelBox("crate", 0.30, 0.3, 0.2, 0.2), 0.6),  # T1 already taken: duplicate
        (LabelBox("barrel", 0.7, 0.7, 0.2, 0.2), 0.8),  # wrong class on T2
        (LabelBox("cone", 0.2, 0.9, 0.1, 0.1), 0.4),  # nothing there
    ]
    assert mark_correct(preds, [T1, T2]) == [(0.9, True), (0.8, False), (0.6, False), (0.4, False)]


def test_ece_is_zero_when_confidence_equals_accuracy_and_grows_with_overconfidence():
    # 10 frames: one box at conf 0.75 on each; 3 of 4 hit in every 4 frames -> accuracy 0.75
    frames = []
    for i in range(8):
        box = T1 if i % 4 else LabelBox("crate", 0.8, 0.8, 0.1, 0.1)
        frames.append(([(box, 0.75)], [T1]))
    assert expected_calibration_error(frames) == pytest.approx(0.0)
    over = [([(b, 0.95)], t) for ((b, _),), t in frames]
    assert expected_calibration_error(over) == pytest.approx(0.2)
    assert expected_calibration_error([([], [T1])]) is None


def test_model_ece_reads_a_yolo_set_and_scores_the_exported_model(tmp_path):
    import cv2
    import numpy as np

    from cvloop.adapters.datasets import read_yolo_labels, write_data_yaml, yolo_split_frames
    from cvloop.app.bench.common import CLASSES, untrained_onnx
    from cvloop.stages.evaluate import model_ece

    root = tmp_path / "set"
    (root / "images" / "holdout").mkdir(parents=True)
    (root / "labels" / "holdout").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(5):
        img = rng.integers(0, 255, (64, 64, 3), np.uint8)
        cv2.imwrite(str(root / "images" / "holdout" / f"f{i}.jpg"), img)
        (root / "labels" / "holdout" / f"f{i}.txt").write_text("2 0.5 0.5 0.25 0.25\n")
    data_yaml = write_data_yaml(root, list(CLASSES), ["holdout"])
    pairs = yolo_split_frames(data_yaml)
    assert [p[0].name for p in pairs] == [f"f{i}.jpg" for i in range(5)]
    assert read_yolo_labels(pairs[0][1], CLASSES) == [LabelBox(CLASSES[2], 0.5, 0.5, 0.25, 0.25)]
    onnx = untrained_onnx(tmp_path, 64)
    # an untrained model's boxes at a near-zero threshold are all wrong: ECE = mean confidence
    ece = model_ece(onnx, CLASSES, 64, data_yaml, conf=0.001)
    assert ece is not None and 0.0 < ece <= 1.0
    # no box above the threshold: nothing to calibrate
    assert model_ece(onnx, CLASSES, 64, data_yaml, conf=0.999) is None
    # over no class at all (a challenger whose only boxes are of a new class): nothing either
    assert model_ece(onnx, CLASSES, 64, data_yaml, conf=0.001, only=[]) is None


def test_a_new_class_is_left_out_of_a_like_for_like_ece():
    pallet = LabelBox("pallet", 0.5, 0.5, 0.2, 0.2)
    # the crate is calibrated (0.75 conf, 3 of 4 right); the new class is badly overconfident
    frames = []
    for i in range(8):
        box = T1 if i % 4 else LabelBox("crate", 0.8, 0.8, 0.1, 0.1)
        frames.append(([(box, 0.75), (LabelBox("pallet", 0.1, 0.1, 0.1, 0.1), 0.95)],
                       [T1, pallet]))  # fmt: skip
    assert expected_calibration_error(frames) > 0.3
    shared = [restrict(p, t, ["crate", "cone"]) for p, t in frames]
    assert all(b.label == "crate" for p, t in shared for b in [*(x for x, _ in p), *t])
    assert expected_calibration_error(shared) == pytest.approx(0.0)

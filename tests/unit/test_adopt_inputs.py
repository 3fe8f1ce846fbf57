"""What a team brings to `cvloop adopt`, read and refused: checkpoints of every kind and
labeled data in YOLO, COCO and Label Studio formats (no services)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from cvloop.adapters.checkpoint import inspect_checkpoint, sha256_of
from cvloop.adapters.label_import import read_source
from cvloop.core.errors import CvloopError


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Untrained Ultralytics models built from their own YAMLs (no download), saved as a
    team's files would be: a detector, a classifier, a segmenter."""
    from cvloop.config.offline import configure_ultralytics

    configure_ultralytics()
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    d = tmp_path_factory.mktemp("ckpt")
    out = {}
    for name, yaml in (("detect", "yolov8n.yaml"), ("classify", "yolo11n-cls.yaml"),
                       ("segment", "yolo11n-seg.yaml"), ("mismatch", "yolov8n.yaml")):  # fmt: skip
        m = YOLO(yaml)
        if name == "detect":
            m.model = DetectionModel(yaml, nc=3, verbose=False)
        if name in ("detect", "mismatch"):  # mismatch: an 80-class head named for 3
            m.model.names = {0: "forklift", 1: "pallet", 2: "person"}
        path = d / f"{name}.pt"
        m.save(path)
        out[name] = path
    return out


def _inspect(path, imgsz=None):
    return inspect_checkpoint(path, sha256_of(path), imgsz)


def test_a_detection_checkpoint_says_its_classes_architecture_and_version(checkpoints):
    info = _inspect(checkpoints["detect"], imgsz=192)
    assert info.task == "detect" and info.classes == ["forklift", "pallet", "person"]
    assert info.imgsz == 192 and info.imgsz_from == "given"
    assert info.architecture.startswith("yolov8n") and info.ultralytics_version.count(".") == 2
    assert info.parameters > 1_000_000 and len(info.sha256) == 64


def test_without_train_args_the_imgsz_must_be_given(checkpoints):
    with pytest.raises(CvloopError, match="does not record the image size") as e:
        _inspect(checkpoints["detect"])
    assert "--imgsz" in e.value.fix


@pytest.mark.parametrize(("kind", "what"), [("classify", "an image classifier"),
                                            ("segment", "an instance-segmentation model")])  # fmt: skip
def test_a_classifier_or_segmenter_is_refused_by_name(checkpoints, kind, what):
    with pytest.raises(CvloopError, match=what) as e:
        _inspect(checkpoints[kind], imgsz=192)
    assert str(checkpoints[kind]) in str(e.value) and "task=detect" in e.value.fix


def test_a_head_that_does_not_match_its_names_is_refused(checkpoints):
    with pytest.raises(CvloopError, match="head predicts 80 classes but it names 3"):
        _inspect(checkpoints["mismatch"], 192)


def test_damaged_renamed_or_swapped_files_are_refused(checkpoints, tmp_path):
    good = checkpoints["detect"].read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(CvloopError, match="not a loadable checkpoint"):
        _inspect(truncated, 192)
    image = tmp_path / "photo.pt"
    image.write_bytes(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    with pytest.raises(CvloopError, match="not a PyTorch file"):
        _inspect(image, 192)
    with pytest.raises(CvloopError, match=r"not \.pt"):
        _inspect(_renamed(checkpoints["detect"], tmp_path / "best.pth"), 192)
    # the file recorded is the file loaded: swapped after its hash was taken -> refused
    swapped = tmp_path / "swapped.pt"
    swapped.write_bytes(good)
    sha = sha256_of(swapped)
    swapped.write_bytes(checkpoints["classify"].read_bytes())
    with pytest.raises(CvloopError, match="changed after its sha256 was recorded"):
        inspect_checkpoint(swapped, sha, 192)
    with pytest.raises(CvloopError, match="no such file"):
        sha256_of(tmp_path / "missing.pt")


def _renamed(src, dest):
    dest.write_bytes(src.read_bytes())
    return dest


# ---- labeled data ----------------------------------------------------------------------


def _image(path, w=64, h=48):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 128, np.uint8))
    return path


def test_yolo_folders_list_files_and_malformed_labels(tmp_path):
    root = tmp_path / "ds"
    for split, n in (("train", 3), ("val", 1)):
        for i in range(n):
            _image(root / "images" / split / f"{i}.jpg")
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "0.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    (root / "labels" / "train" / "1.txt").write_text("0 0.5 0.5\n")  # 3 fields: malformed
    (root / "labels" / "train" / "2.txt").write_text("7 0.5 0.5 0.2 0.2\n")  # no class 7
    (root / "val.txt").write_text("images/val/0.jpg\nimages/val/missing.jpg\n")
    (root / "data.yaml").write_text("train: images/train\nval: val.txt\n"
                                    "names: {0: forklift, 1: pallet}\n")  # fmt: skip
    src = read_source(root)
    assert src.format == "yolo" and src.classes == ["forklift", "pallet"]
    by = {f.path.rsplit("/", 2)[-2] + "/" + f.path.rsplit("/", 1)[-1]: f for f in src.frames}
    assert [b.label for b in by["train/0.jpg"].boxes] == ["pallet"]
    assert by["val/0.jpg"].boxes == [] and by["val/0.jpg"].split == "val"  # no label: background
    reasons = {r.path.rsplit("/", 1)[-1]: r.reason for r in src.rejected}
    assert "3 fields, expected 5" in reasons["1.jpg"] and "class id 7" in reasons["2.jpg"]
    assert reasons["missing.jpg"] == "image listed but missing"


def test_coco_boxes_are_normalized_crowds_left_out_missing_images_rejected(tmp_path):
    _image(tmp_path / "imgs" / "a.jpg", 200, 100)
    _image(tmp_path / "imgs" / "nested" / "b.jpg", 200, 100)
    doc = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 200, "height": 100},
                   {"id": 2, "file_name": "b.jpg", "width": 200, "height": 100},
                   {"id": 3, "file_name": "gone.jpg", "width": 200, "height": 100}],
        "categories": [{"id": 5, "name": "person"}, {"id": 9, "name": "pallet"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 9, "bbox": [20, 10, 40, 20], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 5, "bbox": [0, 0, 200, 100], "iscrowd": 1},
            {"id": 3, "image_id": 2, "category_id": 5, "bbox": [100, 50, 50, 50]},
        ],
    }  # fmt: skip
    (tmp_path / "coco.json").write_text(json.dumps(doc))
    src = read_source(tmp_path / "coco.json", images_dir=tmp_path / "imgs")
    assert src.format == "coco" and src.classes == ["person", "pallet"]
    a, b = sorted(src.frames, key=lambda f: f.path)
    assert a.size == (200, 100)
    (box,) = a.boxes
    assert box.label == "pallet" and (box.cx, box.cy, box.w, box.h) == (0.2, 0.2, 0.2, 0.2)
    assert b.path.endswith("nested/b.jpg") and [x.label for x in b.boxes] == ["person"]
    assert [r.path.rsplit("/", 1)[-1] for r in src.rejected] == ["gone.jpg"]
    assert any("1 crowd annotations" in n for n in src.notes)


def test_label_studio_export_latest_finished_annotation_counts(tmp_path):
    _image(tmp_path / "1a2b3c4d-cam.jpg", 100, 100)
    tasks = [
        {"data": {"image": "/data/upload/3/1a2b3c4d-cam.jpg"}, "annotations": [
            {"id": 1, "created_at": "2026-01-01", "result": [
                {"type": "rectanglelabels", "original_width": 100, "original_height": 100,
                 "value": {"x": 10, "y": 10, "width": 20, "height": 40,
                           "rectanglelabels": ["person"]}}]},
            {"id": 2, "created_at": "2026-01-02", "was_cancelled": True, "result": []},
        ]},
        {"data": {"image": "/data/upload/3/nothing.jpg"}, "annotations": []},
    ]  # fmt: skip
    (tmp_path / "export.json").write_text(json.dumps(tasks))
    src = read_source(tmp_path / "export.json")
    assert src.format == "label-studio" and src.classes == ["person"]
    (f,) = src.frames
    (box,) = f.boxes
    assert (round(box.cx, 3), round(box.cy, 3), box.w, box.h) == (0.2, 0.3, 0.2, 0.4)
    assert f.size == (100, 100) and any("1 tasks without" in n for n in src.notes)


def test_unreadable_exports_are_refused_naming_the_file(tmp_path):
    (tmp_path / "broken.json").write_text('{"images": [')
    with pytest.raises(CvloopError, match=r"broken\.json: not readable JSON"):
        read_source(tmp_path / "broken.json")
    with pytest.raises(CvloopError, match="no such file"):
        read_source(tmp_path / "nope.json")
    (tmp_path / "other.json").write_text('{"foo": 1}')
    with pytest.raises(CvloopError, match="neither COCO"):
        read_source(tmp_path / "other.json")

"""Slice evaluation sets are the holdout's tagged frames, as YOLO folders."""

from __future__ import annotations

import cv2
import numpy as np
import yaml

from cvloop.adapters.datasets import add_frames
from cvloop.adapters.eval_sets import build_slice_sets, slice_dirname
from cvloop.core.frames import LabelBox, NewFrame

CLASSES = ["crate", "barrel", "cone"]


def _frame(i: int, tags: list[str]) -> NewFrame:
    img = np.full((32, 32, 3), i * 20, np.uint8)
    img[i : i + 4, :] = 255
    jpeg = cv2.imencode(".jpg", img)[1].tobytes()
    return NewFrame(jpeg, [LabelBox("cone", 0.5, 0.5, 0.2, 0.2)], f"k{i}", "cam-02", i, "holdout",
                    "reviewed", slice_tags=tags)  # fmt: skip


def test_slice_sets_hold_exactly_the_tagged_holdout_frames(tmp_path):
    holdout = tmp_path / "holdout"
    frames = [
        _frame(0, []),
        _frame(1, ["drift:camera cam-02"]),
        _frame(2, ["drift:camera cam-02", "drift:class cone"]),
    ]
    add_frames(holdout, frames, CLASSES, "holdout-v2", 1)
    sets = build_slice_sets(
        holdout,
        ["drift:camera cam-02", "drift:class cone", "drift:camera cam-09"],
        tmp_path / "slices",
        CLASSES,
    )
    assert {t: n for t, (_, n) in sets.items()} == {
        "drift:camera cam-02": 2,
        "drift:class cone": 1,
        "drift:all": 2,  # the run's slices pooled: frames 1 and 2
        "clean": 1,  # frame 0 has no drift tag
    }
    data_yaml, _ = sets["drift:camera cam-02"]
    assert data_yaml.parent.name == slice_dirname("drift:camera cam-02") == "drift-camera-cam-02"
    spec = yaml.safe_load(data_yaml.read_text())
    assert spec["val"] == "images/holdout" and spec["names"] == dict(enumerate(CLASSES))
    imgs = sorted(p.name for p in (data_yaml.parent / "images" / "holdout").iterdir())
    lbls = sorted(p.name for p in (data_yaml.parent / "labels" / "holdout").iterdir())
    assert len(imgs) == 2 and [i[:-4] for i in imgs] == [lb[:-4] for lb in lbls]
    # building again replaces the set (a slice never keeps stale frames)
    again = build_slice_sets(holdout, ["drift:class cone"], tmp_path / "slices", CLASSES)
    assert again["drift:class cone"][1] == 1
    assert again["drift:all"][1] == 1  # only frame 2 carries the one slice asked for


def test_a_class_view_relabels_the_frames_for_a_model_with_another_class_list(tmp_path):
    from cvloop.adapters.eval_sets import class_view

    holdout = tmp_path / "holdout"
    four = [*CLASSES, "pallet"]
    frame = _frame(1, [])
    frame.boxes = [LabelBox("pallet", 0.2, 0.2, 0.1, 0.1), LabelBox("cone", 0.5, 0.5, 0.2, 0.2)]
    add_frames(holdout, [frame, _frame(2, [])], four, "holdout-v3", 2)
    # the champion knows the three old classes: pallet boxes are left out, the rest keep ids
    data = class_view(holdout, tmp_path / "view", CLASSES, {0: 0, 1: 1, 2: 2, 3: None})
    assert yaml.safe_load(data.read_text())["names"] == dict(enumerate(CLASSES))
    labels = sorted((tmp_path / "view" / "labels" / "holdout").glob("*.txt"))
    assert [p.read_text() for p in labels] == ["2 0.500000 0.500000 0.200000 0.200000\n"] * 2
    images = sorted((tmp_path / "view" / "images" / "holdout").glob("*.jpg"))
    assert len(images) == 2 and images[0].stat().st_nlink == 2  # hard links, not copies


def test_each_camera_group_of_the_holdout_is_a_slice_when_there_are_several(tmp_path):
    from dataclasses import replace

    holdout = tmp_path / "holdout"
    frames = [_frame(0, []), replace(_frame(1, []), camera="north-01"),
              replace(_frame(2, []), camera="north-02")]  # fmt: skip
    add_frames(holdout, frames, CLASSES, "holdout-v2", 1)
    groups = {"north-01": "north", "north-02": "north", "cam-02": "default"}
    sets = build_slice_sets(holdout, [], tmp_path / "slices", CLASSES, groups)
    assert {t: n for t, (_, n) in sets.items()} == {"clean": 3, "group:default": 1,
                                                    "group:north": 2}  # fmt: skip
    # one group only (or no registry): no group slice, the holdout is the group
    one = build_slice_sets(holdout, [], tmp_path / "s1", CLASSES, {"north-01": "north"} | {
        "north-02": "north", "cam-02": "north"})  # fmt: skip
    assert not any(t.startswith("group:") for t in one)
    assert not any(t.startswith("group:") for t in build_slice_sets(holdout, [], tmp_path / "s2",
                                                                    CLASSES))  # fmt: skip

"""Resizing the class head keeps what the model learned: before any training step, the
resized model scores the old classes and places the boxes exactly as the old one did."""

from __future__ import annotations

import pytest
import torch

from cvloop.adapters.head import resize_class_head
from cvloop.core.errors import CvloopError

OLD = ["crate", "barrel", "cone"]


@pytest.fixture(scope="module")
def trained():
    """A yolo11p detector with non-trivial weights (as if trained), names crate/barrel/cone."""
    from ultralytics.nn.tasks import DetectionModel

    from cvloop.adapters.models import model_yaml_path

    torch.manual_seed(0)
    m = DetectionModel(str(model_yaml_path("yolo11p.yaml")), nc=3, verbose=False)
    with torch.no_grad():  # move every class row away from its init: "learned" weights
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    m.names = dict(enumerate(OLD))
    return m.eval()


def _out(model, x):
    with torch.no_grad():
        y = model(x)
    return (y[0] if isinstance(y, (list, tuple)) else y).float()  # (b, 4 + nc, anchors)


def test_adding_a_class_keeps_old_scores_and_boxes(trained):
    x = torch.rand(2, 3, 128, 128)
    new, rep = resize_class_head(trained, [*OLD, "pallet"])
    new.eval()
    a, b = _out(trained, x), _out(new, x)
    assert b.shape[1] == a.shape[1] + 1
    torch.testing.assert_close(b[:, :4], a[:, :4])  # boxes
    torch.testing.assert_close(b[:, 4:7], a[:, 4:7])  # crate, barrel, cone scores
    assert rep.new_classes == ["pallet"] and rep.dropped_classes == []
    assert rep.reinitialised == []
    assert new.names == {0: "crate", 1: "barrel", 2: "cone", 3: "pallet"}
    # the new class starts from Ultralytics' prior, not from a copy of another class
    assert not torch.allclose(b[:, 7], a[:, 4])


def test_retire_and_rename_follow_the_names_not_the_ids(trained):
    x = torch.rand(1, 3, 128, 128)
    # "barrel" retired; "cone" renamed "traffic-cone" (it keeps its learned row)
    new, rep = resize_class_head(trained, ["crate", "traffic-cone"], {"traffic-cone": "cone"})
    new.eval()
    a, b = _out(trained, x), _out(new, x)
    torch.testing.assert_close(b[:, 4], a[:, 4])
    torch.testing.assert_close(b[:, 5], a[:, 6])
    assert rep.dropped_classes == ["barrel"]
    assert rep.kept_classes == {"crate": "crate", "traffic-cone": "cone"}


def test_merging_two_classes_into_one_keeps_the_target(trained):
    # barrel merged into crate: crate keeps its own learned row (barrel's boxes become crates
    # in the labels, and the fine-tune teaches the merged class)
    new, rep = resize_class_head(trained, ["crate", "cone"], {"crate": "crate"})
    assert rep.dropped_classes == ["barrel"] and rep.new_classes == []
    x = torch.rand(1, 3, 128, 128)
    a, b = _out(trained, x), _out(new.eval(), x)
    torch.testing.assert_close(b[:, 4], a[:, 4])
    torch.testing.assert_close(b[:, 5], a[:, 6])


@pytest.mark.parametrize(
    ("names", "sources", "message"),
    [
        (["crate", "crate"], None, "duplicate class names"),
        (["crate", "drum"], {"drum": "keg"}, "'keg' is not a class of the model"),
        (["crate"], {"drum": "barrel"}, "'drum' is not in the new class list"),
    ],
)
def test_bad_requests_name_the_problem(trained, names, sources, message):
    with pytest.raises(CvloopError, match=message):
        resize_class_head(trained, names, sources)


def test_a_resized_checkpoint_loads_in_ultralytics_with_the_new_names(trained, tmp_path):
    from ultralytics import YOLO

    from cvloop.adapters.head import resize_checkpoint

    pt = tmp_path / "best.pt"
    torch.save({"model": trained, "train_args": {"imgsz": 128}}, pt)
    out, rep = resize_checkpoint(pt, [*OLD, "pallet"], tmp_path / "init.pt")
    loaded = YOLO(str(out))
    assert loaded.names == {0: "crate", 1: "barrel", 2: "cone", 3: "pallet"}
    x = torch.rand(1, 3, 128, 128)
    a, b = _out(trained, x), _out(loaded.model.eval(), x)
    torch.testing.assert_close(b[:, 4:7], a[:, 4:7])
    assert rep.new_classes == ["pallet"]


@pytest.mark.parametrize(
    "names_yaml",
    [
        "names:\n  0: crate\n  1: barrel\n  2: cone\n  3: pallet\n",
        "names: [crate, barrel, cone, pallet]\n",
    ],
)
def test_the_fine_tune_reads_the_class_list_of_the_dataset(tmp_path, names_yaml):
    from cvloop.stages.finetune import _dataset_names

    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\n" + names_yaml)
    assert _dataset_names(str(tmp_path / "data.yaml")) == [*OLD, "pallet"]


def test_a_fine_tune_that_adds_a_class_sees_its_frames_repeat_times(tmp_path):
    import yaml

    from cvloop.stages.finetune import repeat_new_class_frames

    ds = tmp_path / "images-dataset"
    for split, frames in (("train", {"a": "0 .5 .5 .1 .1\n", "b": "3 .5 .5 .2 .1\n0 .2 .2 .1 .1\n",
                                     "c": ""}), ("val", {"v": "3 .5 .5 .2 .1\n"})):  # fmt: skip
        (ds / "images" / split).mkdir(parents=True)
        (ds / "labels" / split).mkdir(parents=True)
        for name, text in frames.items():
            (ds / "images" / split / f"{name}.jpg").write_bytes(b"jpg")
            (ds / "labels" / split / f"{name}.txt").write_text(text)
    (ds / "data.yaml").write_text(yaml.safe_dump({"train": "images/train", "val": "images/val",
                                                  "names": {0: "crate", 3: "pallet"}}))  # fmt: skip
    out = repeat_new_class_frames(str(ds / "data.yaml"), [3], 4, tmp_path / "init")
    cfg = yaml.safe_load(open(out))  # noqa: SIM115
    listed = (tmp_path / "init" / "train.txt").read_text().split()
    assert [p.rsplit("/", 1)[1] for p in listed] == ["a.jpg"] + ["b.jpg"] * 4 + ["c.jpg"]
    assert cfg["val"] == str(ds / "images" / "val") and cfg["names"] == {0: "crate", 3: "pallet"}
    # no new class, or no repeat: the dataset's own data.yaml
    assert repeat_new_class_frames(str(ds / "data.yaml"), [], 4, tmp_path / "x") == str(
        ds / "data.yaml"
    )
    assert repeat_new_class_frames(str(ds / "data.yaml"), [3], 1, tmp_path / "x") == str(
        ds / "data.yaml"
    )

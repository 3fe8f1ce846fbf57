"""A team's PNG frames keep their bytes and a name that says what they are, in a dataset
version and in every evaluation view made from the holdout."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from cvloop.adapters.datasets import add_frames, image_file, image_suffix, read_manifest
from cvloop.adapters.eval_sets import build_slice_sets, class_view
from cvloop.core.frames import LabelBox, NewFrame

CLASSES = ["forklift", "pallet", "person"]


def _image(fmt: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


def _frame(data: bytes, tags: list[str]) -> NewFrame:
    return NewFrame(image=data, boxes=[LabelBox("pallet", 0.5, 0.5, 0.2, 0.1)],
                    source_key="site-a/dock/2031-02-10/IMG_1.png", camera="dock",
                    ts_ms=1_928_480_400_000, split="holdout", label_source="reviewed",
                    slice_tags=tags)  # fmt: skip


def test_suffix_from_the_bytes_not_the_name():
    assert image_suffix(_image("PNG", 0)) == ".png"
    assert image_suffix(_image("JPEG", 0)) == ".jpg"
    assert image_suffix(_image("BMP", 0)) == ".bmp"
    assert image_suffix(_image("WEBP", 0)) == ".webp"


def test_png_and_jpeg_frames_are_stored_as_what_they_are_and_every_view_finds_them(tmp_path):
    png, jpeg = _image("PNG", 1), _image("JPEG", 2)
    root = tmp_path / "holdout"
    added, _ = add_frames(root, [_frame(png, ["drift:camera dock"]), _frame(jpeg, [])],
                          CLASSES, "holdout-v2", 1)  # fmt: skip
    assert added == 2
    by_suffix = {}
    for e in read_manifest(root):
        path = image_file(root, e.split, e.id)
        assert path.exists() and (root / "labels" / e.split / f"{e.id}.txt").exists()
        by_suffix[path.suffix] = path.read_bytes()
    assert by_suffix == {".png": png, ".jpg": jpeg}  # bytes as they came
    sets = build_slice_sets(root, ["drift:camera dock"], tmp_path / "slices", CLASSES)
    for tag, suffix in (("drift:camera dock", ".png"), ("clean", ".jpg")):
        data_yaml, n = sets[tag]
        images = list((data_yaml.parent / "images" / "holdout").iterdir())
        labels = list((data_yaml.parent / "labels" / "holdout").iterdir())
        assert n == 1 and [p.suffix for p in images] == [suffix] and len(labels) == 1
    view = class_view(root, tmp_path / "view", ["pallet"], {0: None, 1: 0, 2: None})
    names = sorted(p.suffix for p in (view.parent / "images" / "holdout").iterdir())
    assert names == [".jpg", ".png"]
    assert all(
        (view.parent / "labels" / "holdout" / f"{p.stem}.txt").read_text().startswith("0 ")
        for p in (view.parent / "images" / "holdout").iterdir()
    )


def test_corrupted_views_keep_the_labels_and_change_the_pixels_deterministically(tmp_path):
    import cv2

    from cvloop.adapters.eval_sets import CORRUPTIONS, corrupted_view

    root = tmp_path / "holdout"
    add_frames(root, [_frame(_image("PNG", 3), []), _frame(_image("JPEG", 4), [])], CLASSES,
               "holdout-v1", 1)  # fmt: skip
    entries = read_manifest(root)
    for kind in CORRUPTIONS:
        view = corrupted_view(root, tmp_path / kind, kind, CLASSES)
        images = sorted((view.parent / "images" / "holdout").iterdir())
        assert [p.stem for p in images] == sorted(e.id for e in entries)
        for e in entries:
            label = view.parent / "labels" / "holdout" / f"{e.id}.txt"
            assert label.read_text() == (root / "labels" / e.split / f"{e.id}.txt").read_text()
            before = cv2.imread(str(image_file(root, e.split, e.id)))
            after = cv2.imread(str(view.parent / "images" / "holdout" / f"{e.id}.png"))
            assert after.shape == before.shape and (after != before).any(), kind
        again = corrupted_view(root, tmp_path / f"{kind}-again", kind, CLASSES)
        assert all(p.read_bytes() == (again.parent / "images" / "holdout" / p.name).read_bytes()
                   for p in images)  # fmt: skip

"""Evaluation sets per slice: the holdout's frames that carry a slice tag.

Champion and challenger are scored on the same frames (runbook step 7). A drift slice's
frames come from the holdout — the drift frames step 9 added there — never from training
data, so the challenger is not scored on frames it learned from. Each slice set is a
small YOLO folder of hard links (copies where links are impossible) with a ``data.yaml``.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from cvloop.adapters.datasets import IMAGE_SUFFIXES, image_file, read_manifest, write_data_yaml
from cvloop.core import slices


def slice_dirname(tag: str) -> str:
    """A folder name for a slice tag (``drift:camera cam-02`` -> ``drift-camera-cam-02``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", tag).strip("-")


DRIFT_ALL = str(slices.DRIFT_ALL)
CLEAN = slices.CLEAN


def build_slice_sets(
    holdout_root: Path,
    tags: list[str],
    out_root: Path,
    classes: list[str],
    groups: dict[str, str] | None = None,
) -> dict[str, tuple[Path, int]]:
    """tag -> (data.yaml, frames) for every tag with at least one holdout frame.

    Besides each tag: ``drift:all``, the frames carrying any of ``tags`` (the run's drift
    slices pooled, large enough to judge when a single slice has a dozen frames), and
    ``clean``, the frames with no drift tag at all (the part of the holdout the drift did
    not touch: a candidate must not get worse there).

    ``groups`` (camera -> camera group, from the camera registry): when the holdout's frames
    come from more than one group, ``group:<name>`` holds each group's frames (a camera
    not in the registry is in ``default``).
    """
    entries = read_manifest(holdout_root)
    wanted = set(tags)
    chosen_by: dict[str, list] = {t: [e for e in entries if t in e.slice_tags] for t in tags}
    if tags:
        chosen_by[DRIFT_ALL] = [e for e in entries if wanted & set(e.slice_tags)]
    chosen_by[CLEAN] = [e for e in entries if not any(slices.is_drift(t) for t in e.slice_tags)]
    if groups is not None:
        by_group: dict[str, list] = {}
        for e in entries:
            by_group.setdefault(groups.get(e.camera, "default"), []).append(e)
        if len(by_group) > 1:
            for g, chosen in sorted(by_group.items()):
                chosen_by[str(slices.group(g))] = chosen
    out: dict[str, tuple[Path, int]] = {}
    for tag, chosen in chosen_by.items():
        if not chosen:
            continue
        root = out_root / slice_dirname(tag)
        if root.exists():
            shutil.rmtree(root)
        for e in chosen:
            image = image_file(holdout_root, e.split, e.id)
            label = holdout_root / "labels" / e.split / f"{e.id}.txt"
            for kind, src in (("images", image), ("labels", label)):
                dst = root / kind / "holdout" / src.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copy2(src, dst)
        out[tag] = (write_data_yaml(root, classes, ["holdout"]), len(chosen))
    return out


def class_view(
    src_root: Path, out_root: Path, to_classes: list[str], mapping: dict[int, int | None]
) -> Path:
    """An evaluation folder (one ``holdout`` split) relabelled for a model with another class
    list: each box's id through ``mapping`` (None: the model cannot predict that class, the
    box is left out). Images are hard links. Returns the view's ``data.yaml``.

    The champion is scored on such a view of the holdout after the schema changed, so it is
    judged on the classes it knows, by the same frames as the challenger."""
    if out_root.exists():
        shutil.rmtree(out_root)
    images = src_root / "images" / "holdout"
    for img in sorted(p for p in images.iterdir() if p.suffix in IMAGE_SUFFIXES):
        dst = out_root / "images" / "holdout" / img.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(img, dst)
        except OSError:
            shutil.copy2(img, dst)
        src_label = src_root / "labels" / "holdout" / f"{img.stem}.txt"
        lines = []
        if src_label.exists():
            for line in src_label.read_text().splitlines():
                parts = line.split()
                if parts and (to := mapping.get(int(parts[0]))) is not None:
                    lines.append(" ".join([str(to), *parts[1:]]))
        lbl = out_root / "labels" / "holdout" / f"{img.stem}.txt"
        lbl.parent.mkdir(parents=True, exist_ok=True)
        lbl.write_text("\n".join(lines) + ("\n" if lines else ""))
    return write_data_yaml(out_root, to_classes, ["holdout"])


#: the corruptions of the robustness gate (seed 002): what a camera does on a bad day
CORRUPTIONS = ("noise", "blur", "jpeg", "brightness")


def corrupt(pixels, kind: str, seed: int):
    """``pixels`` (BGR uint8) as a worse camera would give them, deterministically per
    ``seed``: sensor ``noise`` (Gaussian, sigma 12), a soft focus (``blur``, Gaussian 5x5),
    heavy compression (``jpeg`` at quality 20), a dim scene (``brightness`` x0.6)."""
    import cv2
    import numpy as np

    if kind == "noise":
        rng = np.random.default_rng(seed)
        noisy = pixels.astype(np.float32) + rng.normal(0.0, 12.0, pixels.shape)
        return np.clip(noisy, 0, 255).astype(np.uint8)
    if kind == "blur":
        return cv2.GaussianBlur(pixels, (5, 5), 1.5)
    if kind == "jpeg":
        _ok, buf = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 20])
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if kind == "brightness":
        return np.clip(pixels.astype(np.float32) * 0.6, 0, 255).astype(np.uint8)
    raise ValueError(f"unknown corruption {kind!r}: one of {CORRUPTIONS}")


def corrupted_view(src_root: Path, out_root: Path, kind: str, classes: list[str]) -> Path:
    """An evaluation folder (one ``holdout`` split) of the holdout at ``src_root`` with
    every image corrupted by ``kind`` (:func:`corrupt`) and the same labels; returns its
    ``data.yaml``. Built again each time (a few hundred frames)."""
    import zlib

    import cv2

    if out_root.exists():
        shutil.rmtree(out_root)
    images, labels = out_root / "images" / "holdout", out_root / "labels" / "holdout"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for e in read_manifest(src_root):
        src = image_file(src_root, e.split, e.id)
        pixels = cv2.imread(str(src), cv2.IMREAD_COLOR)  # EXIF orientation applied
        if pixels is None:
            continue
        cv2.imwrite(str(images / f"{e.id}.png"), corrupt(pixels, kind, zlib.crc32(e.id.encode())))
        label = src_root / "labels" / e.split / f"{e.id}.txt"
        if label.exists():
            try:
                os.link(label, labels / label.name)
            except OSError:
                shutil.copy2(label, labels / label.name)
    return write_data_yaml(out_root, classes, ["holdout"])

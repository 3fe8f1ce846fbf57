"""Labeled data in the formats teams have, read into one shape: an image file and its boxes
(class name + normalized ``cx, cy, w, h``), nothing else assumed.

- **YOLO** (Ultralytics): a ``data.yaml`` with ``names`` and ``train`` / ``val`` / ``test``
  entries, each a folder of images, a ``.txt`` list of image paths, or a list of those;
  labels beside them by Ultralytics' rule (``/images/`` → ``/labels/``, ``.txt``). An image
  without a label file is a frame without objects, as in Ultralytics.
- **COCO** detection JSON: ``images`` / ``annotations`` (``bbox`` = x, y, w, h in pixels) /
  ``categories``; image files under ``images_dir`` (default: the JSON's folder). Crowd
  annotations (``iscrowd: 1``) are regions, not objects: left out, and counted.
- **Label Studio** JSON export (``[{"data": {"image": ...}, "annotations": [...]}]``):
  rectangle labels in percent; the latest annotation that was not cancelled counts; image
  files are found under ``images_dir`` by file name.

Problems with one frame (a missing or unreadable image, a malformed label line, a size that
does not match the file) never stop the import: the frame is rejected with its reason, for
the quarantine report. Boxes refer to the image as displayed (EXIF orientation applied), as
in Ultralytics and Label Studio.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cvloop.core.errors import CvloopError
from cvloop.core.frames import LabelBox

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
FORMATS = ("yolo", "coco", "label-studio")


@dataclass(frozen=True)
class SourceFrame:
    """One labeled image of the team's data, before any check."""

    path: str  # the image file
    boxes: list[LabelBox]  # class names as the source spells them
    split: str | None = None  # train / val / test where the source says so
    size: tuple[int, int] | None = None  # (width, height) the labels were made on, if stated


@dataclass(frozen=True)
class SourceReject:
    path: str
    reason: str


@dataclass
class SourceData:
    format: str
    origin: str  # the file or folder given
    classes: list[str]  # the source's class names, in its order
    frames: list[SourceFrame] = field(default_factory=list)
    rejected: list[SourceReject] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def detect_format(path: Path) -> str:
    """``yolo`` for a data.yaml (or a folder holding one), ``coco`` / ``label-studio`` for a
    JSON by its shape."""
    if path.is_dir():
        path = path / "data.yaml"
    if path.suffix in (".yaml", ".yml"):
        return "yolo"
    if path.suffix != ".json":
        raise CvloopError(f"{path}: not a data.yaml or a JSON export",
                          fix="give an Ultralytics data.yaml, a COCO JSON or a Label Studio "
                          "JSON export, or name it with --format")  # fmt: skip
    head = _read_json(path)
    if isinstance(head, dict) and {"images", "annotations"} <= head.keys():
        return "coco"
    if isinstance(head, list):
        return "label-studio"
    raise CvloopError(f"{path}: a JSON that is neither COCO (images + annotations) nor a "
                      "Label Studio export (a list of tasks)",
                      fix="export COCO detection JSON, or Label Studio's JSON (not JSON-MIN)")  # fmt: skip


def read_source(path: str | Path, fmt: str | None = None, images_dir: str | Path | None = None):
    """The labeled frames at ``path`` in ``fmt`` (detected when None)."""
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise CvloopError(f"labeled data {p}: no such file or folder",
                          fix="give the data.yaml, the COCO JSON or the Label Studio export")  # fmt: skip
    fmt = fmt or detect_format(p)
    imgs = Path(images_dir).expanduser().resolve() if images_dir else None
    if fmt == "yolo":
        return read_yolo(p / "data.yaml" if p.is_dir() else p)
    if fmt == "coco":
        return read_coco(p, imgs or p.parent)
    if fmt == "label-studio":
        return read_label_studio(p, imgs or p.parent)
    raise CvloopError(f"unknown label format {fmt!r}", fix=f"use one of {', '.join(FORMATS)}")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CvloopError(f"{path}: not readable JSON ({exc})",
                          fix="export the file again (it may be truncated)") from exc  # fmt: skip


# ---- YOLO ------------------------------------------------------------------------------


def _yolo_names(path: Path, spec: dict) -> list[str]:
    names = spec.get("names")
    if isinstance(names, dict):
        keys = sorted(int(k) for k in names)
        if keys != list(range(len(keys))):
            raise CvloopError(f"{path}: names ids {keys} are not 0..{len(keys) - 1}",
                              fix="number the classes 0, 1, 2 ... in data.yaml")  # fmt: skip
        names = [names[k] if k in names else names[str(k)] for k in keys]
    if not isinstance(names, list) or not names:
        raise CvloopError(f"{path}: no class names (`names:`)",
                          fix="list the classes in data.yaml: names: {0: forklift, 1: pallet}")  # fmt: skip
    return [str(n) for n in names]


def _yolo_images(root: Path, entry) -> Iterator[Path]:
    for item in entry if isinstance(entry, list) else [entry]:
        p = Path(item)
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            yield from sorted(x for x in p.rglob("*") if x.suffix.lower() in IMAGE_SUFFIXES)
        elif p.suffix == ".txt" and p.is_file():
            for line in p.read_text().splitlines():
                line = line.strip()
                if line:
                    q = Path(line)
                    yield q if q.is_absolute() else (root / q).resolve()
        else:
            yield p  # reported as missing by the reader


def _yolo_label_path(img: Path) -> Path:
    parts = list(img.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _yolo_boxes(label: Path, names: list[str]) -> list[LabelBox]:
    """Boxes of one label file; raises ValueError naming the bad line."""
    boxes = []
    for n, line in enumerate(label.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            raise ValueError(f"{label.name} line {n}: {len(fields)} fields, expected 5 "
                             "(class cx cy w h; segments are not boxes)")  # fmt: skip
        try:
            cls = int(fields[0])
            cx, cy, w, h = (float(x) for x in fields[1:])
        except ValueError:
            raise ValueError(f"{label.name} line {n}: not numbers: {line.strip()!r}") from None
        if not 0 <= cls < len(names):
            raise ValueError(f"{label.name} line {n}: class id {cls} is not one of the "
                             f"{len(names)} names of data.yaml")  # fmt: skip
        boxes.append(LabelBox(names[cls], cx, cy, w, h))
    return boxes


def read_yolo(data_yaml: Path) -> SourceData:
    import yaml

    try:
        spec = yaml.safe_load(data_yaml.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CvloopError(f"{data_yaml}: not readable YAML ({exc})",
                          fix="fix the data.yaml") from exc  # fmt: skip
    names = _yolo_names(data_yaml, spec)
    base = Path(spec["path"]) if spec.get("path") else data_yaml.parent
    root = base if base.is_absolute() else (data_yaml.parent / base).resolve()
    out = SourceData("yolo", str(data_yaml), names)
    seen: set[Path] = set()
    for split in ("train", "val", "test"):
        if not spec.get(split):
            continue
        for img in _yolo_images(root, spec[split]):
            if img in seen:
                continue
            seen.add(img)
            if not img.is_file():
                out.rejected.append(SourceReject(str(img), "image listed but missing"))
                continue
            label = _yolo_label_path(img)
            try:
                boxes = _yolo_boxes(label, names) if label.is_file() else []
            except ValueError as exc:
                out.rejected.append(SourceReject(str(img), f"malformed label: {exc}"))
                continue
            out.frames.append(SourceFrame(str(img), boxes, split))
    if not seen:
        raise CvloopError(f"{data_yaml}: no images under train/val/test",
                          fix="point train: / val: at the image folders or list files")  # fmt: skip
    return out


# ---- COCO ------------------------------------------------------------------------------


def _find_image(images_dir: Path, name: str, index: dict[str, Path] | None) -> Path | None:
    direct = images_dir / name
    if direct.is_file():
        return direct
    return (index or {}).get(Path(name).name)


def _image_index(images_dir: Path) -> dict[str, Path]:
    """File name -> path under ``images_dir`` (exports often flatten or nest folders)."""
    out: dict[str, Path] = {}
    if images_dir.is_dir():
        for p in sorted(images_dir.rglob("*")):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                out.setdefault(p.name, p)
    return out


def read_coco(path: Path, images_dir: Path) -> SourceData:
    doc = _read_json(path)
    try:
        cats = {int(c["id"]): str(c["name"]) for c in doc.get("categories") or []}
        images = {int(i["id"]): i for i in doc["images"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise CvloopError(f"{path}: malformed COCO ({exc!r} in images/categories)",
                          fix="export COCO detection JSON with images[].id/file_name and "
                          "categories[].id/name") from exc  # fmt: skip
    if not cats:
        raise CvloopError(f"{path}: no categories", fix="export the categories with the labels")
    out = SourceData("coco", str(path), [cats[k] for k in sorted(cats)])
    boxes: dict[int, list[LabelBox]] = {i: [] for i in images}
    bad: dict[int, str] = {}
    crowd = 0
    for n, a in enumerate(doc.get("annotations") or []):
        try:
            img = images[int(a["image_id"])]
            name = cats[int(a["category_id"])]
            x, y, w, h = (float(v) for v in a["bbox"])
            iw, ih = float(img["width"]), float(img["height"])
        except (KeyError, TypeError, ValueError) as exc:
            iid = a.get("image_id") if isinstance(a, dict) else None
            if isinstance(iid, int) and iid in images:
                bad[iid] = f"malformed annotation #{n} ({exc!r})"
            else:
                out.notes.append(f"annotation #{n} names no known image or category ({exc!r})")
            continue
        if a.get("iscrowd"):
            crowd += 1
            continue
        boxes[int(a["image_id"])].append(
            LabelBox(name, (x + w / 2) / iw, (y + h / 2) / ih, w / iw, h / ih)
        )
    if crowd:
        out.notes.append(f"{crowd} crowd annotations (iscrowd: 1) left out: regions, not objects")
    index = None
    for iid, img in sorted(images.items()):
        name = str(img.get("file_name") or "")
        found = _find_image(images_dir, name, index)
        if found is None and index is None:
            index = _image_index(images_dir)
            found = _find_image(images_dir, name, index)
        if found is None:
            out.rejected.append(SourceReject(str(images_dir / name), "image listed but missing"))
        elif iid in bad:
            out.rejected.append(SourceReject(str(found), bad[iid]))
        else:
            size = (int(img["width"]), int(img["height"]))
            out.frames.append(SourceFrame(str(found), boxes[iid], None, size))
    return out


# ---- Label Studio ----------------------------------------------------------------------


def _ls_annotation(task: dict) -> list[dict] | None:
    done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not done:
        return None
    latest = max(done, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""),
                                      a.get("id") or 0))  # fmt: skip
    return latest.get("result") or []


def read_label_studio(path: Path, images_dir: Path) -> SourceData:
    tasks = _read_json(path)
    out = SourceData("label-studio", str(path), [])
    index = _image_index(images_dir)
    names: list[str] = []
    unlabeled = 0
    for n, task in enumerate(tasks):
        ref = str(((task or {}).get("data") or {}).get("image") or "")
        if not ref:
            out.notes.append(f"task #{n} has no data.image")
            continue
        base = ref.rsplit("/", 1)[-1].split("?")[0]
        found = index.get(base) or index.get(base.split("-", 1)[-1])  # uploads get a prefix
        result = _ls_annotation(task)
        if result is None:
            unlabeled += 1
            continue
        if found is None:
            out.rejected.append(SourceReject(str(images_dir / base), "image listed but missing"))
            continue
        try:
            boxes, size = [], None
            for r in result:
                if r.get("type") != "rectanglelabels":
                    continue
                v = r["value"]
                label = str(v["rectanglelabels"][0])
                if abs(float(v.get("rotation") or 0)) > 1e-6:
                    raise ValueError(f"box {r.get('id')} is rotated ({v['rotation']} deg)")
                x, y, w, h = (float(v[k]) / 100 for k in ("x", "y", "width", "height"))
                boxes.append(LabelBox(label, x + w / 2, y + h / 2, w, h))
                if label not in names:
                    names.append(label)
                if r.get("original_width") and r.get("original_height"):
                    size = (int(r["original_width"]), int(r["original_height"]))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            out.rejected.append(SourceReject(str(found), f"malformed result ({exc})"))
            continue
        out.frames.append(SourceFrame(str(found), boxes, None, size))
    out.classes = names
    if unlabeled:
        out.notes.append(f"{unlabeled} tasks without a finished annotation left out")
    return out

"""A detector cvloop did not make: what a team brings to `cvloop adopt`.

Built offline with plain numpy / OpenCV drawing and plain Ultralytics calls — none of
cvloop's code, none of its synthetic fleet: other class names (forklift, pallet, person),
640 x 480 frames, labels in COCO JSON (the team's format), a model trained at imgsz 192 from
Ultralytics' own ``yolov8n.yaml``. Usable as a script::

    python tests/external_detector.py /tmp/team   # writes the project, prints its paths
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLASSES = ["forklift", "pallet", "person"]
WIDTH, HEIGHT = 640, 480
IMGSZ = 192


@dataclass(frozen=True)
class ExternalProject:
    root: Path
    checkpoint: Path  # runs/.../weights/best.pt, as Ultralytics writes it
    coco_json: Path  # the team's labels of images/
    images: Path
    yolo_yaml: Path  # the same data in YOLO format (what they trained with)
    frames: int
    holdout_json: Path  # the team's own holdout (other frames, COCO too) ...
    holdout_images: Path  # ... and its images
    holdout_frames: int


def _draw(rng: np.random.Generator):
    """One 640x480 BGR frame with 1-4 objects; returns the image and COCO boxes."""
    import cv2

    base = rng.integers(60, 200)
    img = np.full((HEIGHT, WIDTH, 3), base, np.uint8)
    img = cv2.add(img, rng.integers(0, 40, (HEIGHT, WIDTH, 3), dtype=np.uint8))
    cv2.rectangle(img, (0, int(HEIGHT * 0.7)), (WIDTH, HEIGHT), (90, 90, 90), -1)  # floor
    boxes = []
    for _ in range(int(rng.integers(1, 5))):
        cls = int(rng.integers(0, len(CLASSES)))
        if cls == 0:  # forklift: orange body, dark mast
            w, h = int(rng.integers(70, 160)), int(rng.integers(70, 140))
        elif cls == 1:  # pallet: wide, low, brown with slats
            w, h = int(rng.integers(80, 180)), int(rng.integers(24, 50))
        else:  # person: tall, blue
            w, h = int(rng.integers(28, 60)), int(rng.integers(80, 170))
        x, y = int(rng.integers(0, WIDTH - w)), int(rng.integers(0, HEIGHT - h))
        if cls == 0:
            cv2.rectangle(img, (x, y + h // 3), (x + w, y + h), (0, 140, 255), -1)
            cv2.rectangle(img, (x + w - 10, y), (x + w, y + h), (30, 30, 30), -1)
        elif cls == 1:
            cv2.rectangle(img, (x, y), (x + w, y + h), (40, 80, 140), -1)
            for s in range(x, x + w, 18):
                cv2.line(img, (s, y), (s, y + h), (20, 50, 90), 3)
        else:
            cv2.ellipse(img, (x + w // 2, y + h // 2 + h // 8), (w // 2, h // 2 - h // 8), 0,
                        0, 360, (200, 60, 20), -1)  # fmt: skip
            cv2.circle(img, (x + w // 2, y + h // 8), max(4, h // 8), (170, 190, 230), -1)
        boxes.append((cls, x, y, w, h))
    return img, boxes


def write_images(root: Path, n: int, seed: int) -> tuple[Path, Path]:
    """``n`` frames under ``root/images`` and their COCO JSON."""
    import cv2

    rng = np.random.default_rng(seed)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    coco = {"images": [], "annotations": [],
            "categories": [{"id": i + 1, "name": c} for i, c in enumerate(CLASSES)]}  # fmt: skip
    for i in range(n):
        img, boxes = _draw(rng)
        name = f"dock-{seed}-{i:04d}.jpg"
        cv2.imwrite(str(images / name), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        coco["images"].append({"id": i + 1, "file_name": name, "width": WIDTH, "height": HEIGHT})
        for cls, x, y, w, h in boxes:
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": i + 1,
                                        "category_id": cls + 1, "bbox": [x, y, w, h],
                                        "area": w * h, "iscrowd": 0})  # fmt: skip
    path = root / "annotations.json"
    path.write_text(json.dumps(coco))
    return images, path


#: where the team's cameras drop their frames: their layout, not cvloop's (camera and day in
#: the path, a camera-made file name, the capture time only in the EXIF)
LAYOUT = "site-a/{camera}/{date}/{name}.{ext}"


def write_production(bucket: Path, cameras: list[str], days: list, per_day: int, seed: int,
                     dark: set = frozenset()) -> dict[str, dict]:  # fmt: skip
    """The team's production frames in their bucket (``LAYOUT``): ``per_day`` frames per
    camera and day, 90 s apart from 10:00 local time (UTC+01:00, in the EXIF only), every
    tenth one a PNG, and every tenth one from a camera mounted sideways (its pixels stored
    rotated, EXIF orientation 6: shown upright, 640 x 480, as the boxes are drawn); a
    (camera, day) in ``dark`` is filmed at 30 % light. Returns, per key,
    its camera, its capture time (UTC) and the truth a careful reviewer would draw:
    ``boxes`` = [(class name, x, y, w, h) in pixels]."""
    import datetime as dt

    from PIL import Image

    tz = dt.timezone(dt.timedelta(hours=1))

    rng = np.random.default_rng(seed)
    truth: dict[str, dict] = {}
    n = 0
    for cam in cameras:
        for day in days:
            for i in range(per_day):
                img, boxes = _draw(rng)
                if (cam, day) in dark:
                    img = (img * 0.3).astype(np.uint8)
                local = dt.datetime.combine(day, dt.time(10)) + dt.timedelta(seconds=90 * i)
                exif = Image.Exif()
                exif[0x8769] = {0x9003: local.strftime("%Y:%m:%d %H:%M:%S"), 0x9011: "+01:00"}
                if i % 10 == 4:  # stored 90 degrees anticlockwise; shown turned clockwise
                    img = np.ascontiguousarray(np.rot90(img))
                    exif[0x0112] = 6
                ext = "png" if i % 10 == 9 else "jpg"
                n += 1
                key = LAYOUT.format(camera=cam, date=day.isoformat(), name=f"IMG_{n:05d}",
                                    ext=ext)  # fmt: skip
                path = bucket / key
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img[:, :, ::-1]).save(path, "PNG" if ext == "png" else "JPEG",
                                                      exif=exif.tobytes(), quality=90)  # fmt: skip
                truth[key] = {"camera": cam, "ts": local.replace(tzinfo=tz).astimezone(dt.UTC),
                              "sideways": i % 10 == 4,
                              "boxes": [(CLASSES[c], x, y, w, h) for c, x, y, w, h in boxes]}  # fmt: skip
    return truth


def coco_to_yolo(coco_json: Path, images: Path, dest: Path, val_every: int = 5) -> Path:
    """The team's own conversion to train with Ultralytics (images linked, not copied)."""
    coco = json.loads(coco_json.read_text())
    by_image: dict[int, list] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    for i, im in enumerate(coco["images"]):
        split = "val" if i % val_every == 0 else "train"
        (dest / "images" / split).mkdir(parents=True, exist_ok=True)
        (dest / "labels" / split).mkdir(parents=True, exist_ok=True)
        link = dest / "images" / split / im["file_name"]
        if not link.exists():
            link.symlink_to(images / im["file_name"])
        lines = []
        for a in by_image.get(im["id"], []):
            x, y, w, h = a["bbox"]
            lines.append(f"{a['category_id'] - 1} {(x + w / 2) / im['width']:.6f} "
                         f"{(y + h / 2) / im['height']:.6f} {w / im['width']:.6f} "
                         f"{h / im['height']:.6f}")  # fmt: skip
        (dest / "labels" / split / Path(im["file_name"]).with_suffix(".txt").name).write_text(
            "\n".join(lines) + "\n"
        )
    yml = dest / "data.yaml"
    yml.write_text(f"path: {dest}\ntrain: images/train\nval: images/val\n"
                   f"names: {json.dumps(dict(enumerate(CLASSES)))}\n")  # fmt: skip
    return yml


def coco_to_label_studio(coco_json: Path, dest: Path) -> Path:
    """The same labels as a Label Studio JSON export (what a team that labeled in Label
    Studio has): uploaded images named ``<8 hex>-<file name>``, boxes in percent, one
    finished annotation per task."""
    coco = json.loads(coco_json.read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    by_image: dict[int, list] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    tasks = []
    for im in coco["images"]:
        w, h = im["width"], im["height"]
        result = [{"id": f"r{a['id']}", "type": "rectanglelabels", "from_name": "label",
                   "to_name": "image", "original_width": w, "original_height": h,
                   "value": {"x": 100 * a["bbox"][0] / w, "y": 100 * a["bbox"][1] / h,
                             "width": 100 * a["bbox"][2] / w, "height": 100 * a["bbox"][3] / h,
                             "rotation": 0, "rectanglelabels": [names[a["category_id"]]]}}
                  for a in by_image.get(im["id"], [])]  # fmt: skip
        tasks.append({"id": im["id"], "data": {"image": f"/data/upload/1/{im['id']:08x}-"
                                               f"{im['file_name']}"},
                      "annotations": [{"id": im["id"], "was_cancelled": False,
                                       "result": result}]})  # fmt: skip
    dest.write_text(json.dumps(tasks))
    return dest


def train_external(yolo_yaml: Path, runs: Path, epochs: int = 30) -> Path:
    """Plain Ultralytics, offline: a nano YOLOv8 from its own YAML, no pretrained weights;
    its settings in a folder of its own, with its MLflow logging off (it would write an
    ``mlflow.db`` into the working directory).

    A working detector, if a weak one: from scratch on 48 frames, Ultralytics' defaults
    (3 warm-up epochs, the learning rate decayed to 1 %, mosaic closed for the last 10)
    leave a model that answers every frame with the same full-frame box at 0.004 even after
    20 epochs, which no monitor can see drift in. One warm-up epoch, a flat rate and mosaic
    throughout reach mAP50 0.33 by epoch 20 (measured), and its confidences fall on a
    frame at 30 % light (p99 0.19 -> 0.005 at epoch 20), as a production model's do."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(runs / "ultralytics-config"))
    from ultralytics import YOLO, settings

    settings.update({"mlflow": False, "sync": False})

    model = YOLO("yolov8n.yaml")
    model.train(data=str(yolo_yaml), epochs=epochs, imgsz=IMGSZ, batch=8, workers=0,
                device="cpu", project=str(runs), name="dock", exist_ok=True, plots=False,
                amp=False, verbose=False, seed=0, deterministic=True, val=True,
                warmup_epochs=1, lrf=1.0, close_mosaic=0)  # fmt: skip
    return runs / "dock" / "weights" / "best.pt"


def make_external_project(
    root: Path, frames: int = 60, epochs: int = 30, holdout: int = 16
) -> ExternalProject:
    root.mkdir(parents=True, exist_ok=True)
    images, coco = write_images(root, frames, seed=7)
    hold_images, hold_coco = write_images(root / "holdout", holdout, seed=8)
    yml = coco_to_yolo(coco, images, root / "yolo")
    best = train_external(yml, root / "runs", epochs)
    return ExternalProject(root, best, coco, images, yml, frames, hold_coco, hold_images, holdout)


if __name__ == "__main__":
    out = make_external_project(Path(sys.argv[1] if len(sys.argv) > 1 else "team"))
    print(json.dumps({k: str(v) for k, v in out.__dict__.items()}, indent=2))

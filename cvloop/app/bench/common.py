"""What several benchmarks need: a model and frames made here (nothing downloaded)."""

from __future__ import annotations

import datetime as dt
import resource
import sys
from pathlib import Path

CLASSES = ("crate", "barrel", "cone")


def untrained_onnx(tmp: Path, imgsz: int) -> Path:
    """The shipped YOLO11 'pico' architecture (3 classes, untrained) exported to ONNX with a
    dynamic batch: the same graph and cost as a trained champion."""
    import contextlib
    import io

    from cvloop.adapters.models import model_yaml_path
    from cvloop.config.offline import configure_ultralytics

    configure_ultralytics()
    from ultralytics import YOLO

    src = Path(model_yaml_path("yolo11p.yaml")).read_text().replace("nc: 80", "nc: 3", 1)
    yaml_path = tmp / "yolo11p.yaml"
    yaml_path.write_text(src)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        out = YOLO(str(yaml_path)).export(
            format="onnx", imgsz=imgsz, dynamic=True, device="cpu", simplify=True
        )
    # a model built from a YAML has no weights file to export beside: Ultralytics writes
    # into the working directory, so move the file where the caller asked
    dest = tmp / f"yolo11p-{imgsz}.onnx"
    Path(out).replace(dest)
    return dest


def fleet_frames(store_dir: Path, frames: int, image_size: int = 256) -> list[tuple[str, str, int]]:
    """At least ``frames`` distinct fleet frames in a local store: (key, camera, ts_ms)."""
    from cvloop.adapters.storage import LocalStorage
    from cvloop.sim.fleet.generate import FleetConfig, cameras_named, generate_fleet

    per_day = 4 * 12 * 3
    days = max(1, -(-frames // per_day))
    cfg = FleetConfig(
        seed=7,
        cameras=cameras_named(4),
        image_size=image_size,
        classes=CLASSES,
        bursts_per_day=12,
        frames_per_burst=3,
    )
    generate_fleet(cfg, dt.date(2026, 1, 1), days, str(store_dir), str(store_dir.parent / "truth"))
    store = LocalStorage(store_dir)
    keys = sorted(k for k in store.keys("frames/") if k.endswith(".jpg"))
    return [(k, k.split("/")[1], int(k.rsplit("/", 1)[1][:-4])) for k in keys]


def peak_rss_mb() -> float:
    """This process's peak resident set size."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024

"""Labelled scenario sets from the synthetic fleet: how much does each drift hurt a model?

Each set is rendered with its ground truth into a small YOLO dataset (one frame per capture
event, no burst near-duplicates) — clean, or under one drift scenario — so a model can be
scored on exactly the conditions a scenario creates.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cvloop.adapters.datasets import add_frames
from cvloop.core import slices
from cvloop.core.frames import LabelBox, NewFrame
from cvloop.sim.fleet.generate import FleetConfig, Scenario, frame_refs, render_ref
from cvloop.sim.fleet.scene import encode_jpeg

SCENARIO_SETS = ("clean", "night", "weather", "new-class-look", "new-camera")


def scenario_config(base: FleetConfig, scenario: str, day: dt.date) -> FleetConfig:
    """The fleet with ``scenario`` active from ``day`` at every camera (``new-camera``: two
    new cameras instead of the fleet's)."""
    if scenario == "clean":
        scen: tuple[Scenario, ...] = ()
        cams = base.cameras
    elif scenario == "new-camera":
        scen = (Scenario("new-camera", day, None, ("new-01", "new-02")),)
        cams = ()
    else:
        scen = (Scenario(scenario, day),)
        cams = base.cameras
    return FleetConfig(
        seed=base.seed,
        cameras=cams,
        image_size=base.image_size,
        bursts_per_day=base.bursts_per_day,
        frames_per_burst=1,
        classes=base.classes,
        scenarios=scen,
    )


def build_scenario_set(
    base: FleetConfig, scenario: str, frames: int, day: dt.date, root: Path
) -> Path:
    """Render ``frames`` labelled frames of ``scenario`` into a YOLO dataset; returns data.yaml."""
    cfg = scenario_config(base, scenario, day)
    out: list[NewFrame] = []
    d = 0
    while len(out) < frames and d < 365:
        for cam in cfg.all_cameras():
            for ref in frame_refs(cfg, cam, day + dt.timedelta(days=d)):
                if len(out) >= frames:
                    break
                pixels, boxes = render_ref(cfg, ref)
                out.append(
                    NewFrame(
                        encode_jpeg(pixels),
                        [LabelBox(b.label, b.cx, b.cy, b.w, b.h) for b in boxes],
                        ref.key,
                        ref.camera,
                        ref.ts_ms,
                        "holdout",
                        "synthetic-truth",
                        slice_tags=[
                            str(slices.SliceTag(slices.DRIFT, None, scenario))
                            if scenario != slices.CLEAN
                            else slices.CLEAN
                        ],
                        pixels=pixels,
                    )
                )
        d += 1
    add_frames(root, out, list(cfg.classes), scenario, 1)
    return root / "data.yaml"

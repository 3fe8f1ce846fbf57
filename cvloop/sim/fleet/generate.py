"""Write the synthetic fleet's frames (and optional videos) to the frame store.

Frame-store layout (the contract every reader relies on)::

    frames/<camera>/<YYYY-MM-DD>/<epoch_ms>.jpg      one JPEG per captured frame
    videos/<camera>/<YYYY-MM-DD>/<epoch_ms>.mp4      optional short clips (start time in the name)
    fleet/cameras.json                                the camera registry (name, group)

Ground truth goes to a *separate* store (default ``$CVLOOP_HOME/fleet-truth``), one JSON line
per frame in ``<camera>/<YYYY-MM-DD>.jsonl``. Only tests and the demo's simulated reviewer
read it; nothing on the model path does.

Cameras capture in bursts, as event-triggered cameras do: ``bursts_per_day`` events per
camera and day, each ``frames_per_burst`` frames at ``burst_fps``.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from cvloop.adapters.frame_keys import CAMERAS_KEY, FRAMES_PREFIX, VIDEOS_PREFIX
from cvloop.adapters.storage import Storage
from cvloop.core.errors import ConfigError
from cvloop.sim.fleet.scene import CLASSES, SCENARIOS, camera_spec, encode_jpeg, render

_SCENARIO_RE = re.compile(
    r"^(?P<name>[a-z-]+)@(?P<start>\d{4}-\d{2}-\d{2})(?:\.\.(?P<end>\d{4}-\d{2}-\d{2}))?"
    r"(?::(?P<cams>[A-Za-z0-9_,.-]+))?$"
)


@dataclass(frozen=True)
class Scenario:
    """A drift scenario active at some cameras from ``start`` (to ``end``, inclusive)."""

    name: str
    start: dt.date
    end: dt.date | None = None
    cameras: tuple[str, ...] = ()  # empty = every camera

    def active(self, camera: str, day: dt.date) -> bool:
        if day < self.start or (self.end is not None and day > self.end):
            return False
        return not self.cameras or camera in self.cameras

    @classmethod
    def parse(cls, text: str) -> Scenario:
        """``name@YYYY-MM-DD[..YYYY-MM-DD][:cam,cam]``, e.g. ``night@2026-10-15:cam-01,cam-02``."""
        m = _SCENARIO_RE.match(text.strip())
        if not m:
            raise ConfigError(
                f"bad scenario {text!r}",
                fix="write name@YYYY-MM-DD[..YYYY-MM-DD][:cam-01,cam-02], "
                f"name one of {', '.join(SCENARIOS)}",
            )
        name = m["name"]
        if name not in SCENARIOS:
            raise ConfigError(
                f"unknown scenario {name!r} in {text!r}",
                fix=f"choose one of {', '.join(SCENARIOS)}",
            )
        cams = tuple(c for c in (m["cams"] or "").split(",") if c)
        if name == "new-camera" and (not cams or not all(c.startswith("new-") for c in cams)):
            raise ConfigError(
                f"scenario {text!r}: new-camera needs the new cameras' names, each starting "
                "with 'new-'",
                fix="e.g. new-camera@2026-10-20:new-01,new-02",
            )
        try:
            start = dt.date.fromisoformat(m["start"])
            end = dt.date.fromisoformat(m["end"]) if m["end"] else None
        except ValueError as exc:
            raise ConfigError(f"bad scenario {text!r}: {exc}", fix="dates are YYYY-MM-DD") from None
        if end and end < start:
            raise ConfigError(f"scenario {text!r} ends before it starts")
        return cls(name, start, end, cams)


@dataclass(frozen=True)
class FleetConfig:
    """What to simulate."""

    seed: int = 7
    cameras: tuple[str, ...] = ("cam-01", "cam-02", "cam-03", "cam-04", "cam-05", "cam-06")
    image_size: int = 320
    bursts_per_day: int = 12
    frames_per_burst: int = 4
    burst_fps: float = 2.0
    scenarios: tuple[Scenario, ...] = ()
    classes: tuple[str, ...] = CLASSES
    groups: dict[str, str] = field(default_factory=dict)

    def all_cameras(self) -> list[str]:
        """Regular cameras plus the cameras that scenarios add (``new-camera``)."""
        extra = [c for s in self.scenarios if s.name == "new-camera" for c in s.cameras]
        return list(dict.fromkeys([*self.cameras, *extra]))

    def camera_live(self, camera: str, day: dt.date) -> bool:
        """New cameras exist only from their scenario's start."""
        starts = [s.start for s in self.scenarios if s.name == "new-camera" and camera in s.cameras]
        return not starts or day >= min(starts)

    def scenarios_at(self, camera: str, day: dt.date) -> frozenset[str]:
        return frozenset(
            s.name for s in self.scenarios if s.name != "new-camera" and s.active(camera, day)
        )


def cameras_named(n: int) -> tuple[str, ...]:
    return tuple(f"cam-{i:02d}" for i in range(1, n + 1))


@dataclass(frozen=True)
class FrameRef:
    """One frame of the simulation: where it is, when, and how to re-render it."""

    camera: str
    day: dt.date
    ts_ms: int
    event: int
    frame_in_event: int
    scenarios: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{FRAMES_PREFIX}/{self.camera}/{self.day.isoformat()}/{self.ts_ms}.jpg"


def frame_refs(cfg: FleetConfig, camera: str, day: dt.date) -> list[FrameRef]:
    """The frames ``camera`` captures on ``day`` (deterministic)."""
    import numpy as np

    from cvloop.sim.fleet.scene import _rng

    if not cfg.camera_live(camera, day):
        return []
    midnight = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    base_ms = int(midnight.timestamp() * 1000)
    period_ms = 86_400_000 / cfg.bursts_per_day
    rng = _rng("schedule", cfg.seed, camera, day.isoformat())
    jitter = rng.uniform(0, 0.5, size=cfg.bursts_per_day)
    scen = tuple(sorted(cfg.scenarios_at(camera, day)))
    refs = []
    for k in range(cfg.bursts_per_day):
        start = base_ms + int((k + float(jitter[k])) * period_ms)
        event = day.toordinal() * 1000 + k
        for i in range(cfg.frames_per_burst):
            ts = start + int(np.round(i * 1000 / cfg.burst_fps))
            refs.append(FrameRef(camera, day, ts, event, i, scen))
    return refs


def render_ref(cfg: FleetConfig, ref: FrameRef):
    cam = camera_spec(ref.camera, cfg.seed, cfg.groups.get(ref.camera, "default"))
    return render(
        cam, ref.event, ref.frame_in_event, cfg.image_size, frozenset(ref.scenarios), cfg.classes
    )


def _truth_line(ref: FrameRef, boxes) -> str:
    return json.dumps(
        {
            "frame_key": ref.key,
            "camera": ref.camera,
            "ts_ms": ref.ts_ms,
            "scenarios": list(ref.scenarios),
            "boxes": [
                [b.label, round(b.cx, 6), round(b.cy, 6), round(b.w, 6), round(b.h, 6)]
                for b in boxes
            ],
        }
    )


@dataclass
class GenerateReport:
    frames_written: int = 0
    frames_skipped: int = 0
    videos_written: int = 0
    cameras: list[str] = field(default_factory=list)
    days: int = 0
    scenario_frames: dict[str, int] = field(default_factory=dict)


def _opener(where: str | Callable[..., Storage], endpoint: str | None) -> Callable[..., Storage]:
    """A picklable way to open a store in a worker process: a URI (opened plainly, with
    ``endpoint``), or the caller's opener (the context's frame store, regions and all)."""
    if callable(where):
        return where
    from cvloop.adapters.storage import open_storage

    return functools.partial(open_storage, where, endpoint_url=endpoint)


def _generate_camera_day(args: tuple) -> GenerateReport:
    cfg, camera, day, open_store, open_truth, video_seconds = args
    store = open_store()
    truth = open_truth()
    rep = GenerateReport()
    lines = []
    existing = set(store.keys(f"{FRAMES_PREFIX}/{camera}/{day.isoformat()}/"))
    for ref in frame_refs(cfg, camera, day):
        pixels, boxes = render_ref(cfg, ref)
        lines.append(_truth_line(ref, boxes))
        for s in ref.scenarios:
            rep.scenario_frames[s] = rep.scenario_frames.get(s, 0) + 1
        if ref.key in existing:
            rep.frames_skipped += 1
            continue
        store.put_bytes(ref.key, encode_jpeg(pixels))
        rep.frames_written += 1
    if lines:
        truth.put_text(f"{camera}/{day.isoformat()}.jsonl", "\n".join(lines) + "\n")
    if video_seconds and cfg.camera_live(camera, day):
        rep.videos_written += _write_video(cfg, camera, day, store, truth, video_seconds)
    return rep


def _write_video(
    cfg: FleetConfig, camera: str, day: dt.date, store, truth, seconds: float, fps: float = 30.0
) -> int:
    """One clip per camera and day at noon: smooth motion, 30 fps, mp4 (OpenCV)."""
    import tempfile
    from pathlib import Path

    import cv2

    start_ms = int(dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC).timestamp() * 1000)
    key = f"{VIDEOS_PREFIX}/{camera}/{day.isoformat()}/{start_ms}.mp4"
    if store.exists(key):
        return 0
    cam = camera_spec(camera, cfg.seed, cfg.groups.get(camera, "default"))
    scen = frozenset(cfg.scenarios_at(camera, day))
    event = day.toordinal() * 1000 + 999
    n = int(seconds * fps)
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        writer = cv2.VideoWriter(
            str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (cfg.image_size, cfg.image_size)
        )
        for i in range(n):
            pixels, boxes = render(cam, event, i, cfg.image_size, scen, cfg.classes, motion_px=0.4)
            writer.write(cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
            ts = start_ms + int(round(i * 1000 / fps))
            lines.append(
                json.dumps(
                    {
                        "video_key": key,
                        "frame_index": i,
                        "ts_ms": ts,
                        "camera": camera,
                        "boxes": [
                            [b.label, round(b.cx, 6), round(b.cy, 6), round(b.w, 6), round(b.h, 6)]
                            for b in boxes
                        ],
                    }
                )
            )
        writer.release()
        store.put_file(key, path)
    truth.put_text(f"videos/{camera}/{day.isoformat()}/{start_ms}.jsonl", "\n".join(lines) + "\n")
    return 1


def days_between(start: dt.date, days: int) -> Iterator[dt.date]:
    for i in range(days):
        yield start + dt.timedelta(days=i)


def generate_fleet(
    cfg: FleetConfig,
    start: dt.date,
    days: int,
    store: str | Callable[..., Storage],
    truth: str | Callable[..., Storage],
    *,
    video_seconds: float = 0.0,
    workers: int = 1,
    endpoint_url: str | None = None,
    progress=None,
) -> GenerateReport:
    """Render and write ``days`` days of the fleet from ``start``; idempotent.

    ``store`` / ``truth``: a URI, or a picklable opener (``functools.partial`` of the
    context's ``frame_store`` / ``storage``: each worker process opens its own). Frames
    that already exist are not rewritten (the same seed gives the same bytes), so a crashed
    generation is resumed by running it again.
    """
    open_store, open_truth = _opener(store, endpoint_url), _opener(truth, endpoint_url)
    store = open_store(create_bucket=True)
    open_truth(create_bucket=True)
    previous = json.loads(store.get_text(CAMERAS_KEY)) if store.exists(CAMERAS_KEY) else {}
    existing = previous.get("cameras", {})
    # a camera keeps the group it was registered with (`cvloop fleet register-camera`);
    # a new one is in the group the config names, else "default"
    registry = {c: cfg.groups.get(c, existing.get(c, "default")) for c in cfg.all_cameras()}
    store.put_text(
        CAMERAS_KEY,
        json.dumps(
            {
                **previous,
                "cameras": {**existing, **registry},
                "image_size": cfg.image_size,
                "classes": list(cfg.classes),
            },
            indent=2,
        ),
    )
    jobs = [
        (cfg, cam, day, open_store, open_truth, video_seconds)
        for day in days_between(start, days)
        for cam in cfg.all_cameras()
    ]
    total = GenerateReport(cameras=cfg.all_cameras(), days=days)
    done = 0

    def merge(rep: GenerateReport) -> None:
        nonlocal done
        total.frames_written += rep.frames_written
        total.frames_skipped += rep.frames_skipped
        total.videos_written += rep.videos_written
        for k, v in rep.scenario_frames.items():
            total.scenario_frames[k] = total.scenario_frames.get(k, 0) + v
        done += 1
        if progress:
            progress(done, len(jobs))

    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for rep in pool.map(_generate_camera_day, jobs, chunksize=4):
                merge(rep)
    else:
        for job in jobs:
            merge(_generate_camera_day(job))
    return total

"""Procedural camera scenes: the synthetic fleet's pixels and ground truth.

Everything here is a pure function of its arguments (and a seed): the same camera, time
and scenario always give the same pixels and the same boxes, so the fleet is reproducible
byte for byte and needs no download.

Three object classes a small YOLO learns from scratch on a CPU within minutes — distinct in
shape, colour and texture — drawn on cluttered per-camera backgrounds, at perspective
scale, with occlusion (objects nearer the camera are drawn last; a box is labelled only
while at least :data:`MIN_VISIBLE` of it is visible):

* ``crate``:  brown wooden square with planks and a cross brace
* ``barrel``: blue upright cylinder with light metal rings
* ``cone``:   orange traffic cone with a white band

Distractors (grey blocks, bushes, poles, signs) are never labelled.

Drift scenarios change what a camera sees from a date on:

* ``night``: dark, low contrast, blue cast, sensor noise
* ``weather``: rain streaks, blur, fog
* ``new-class-look``: crates become green plastic crates with a grid of holes
* ``new-camera``: cameras whose names start with ``new-`` have a high, wide viewpoint with
  small objects and a different ground (see :func:`camera_spec`)
* ``new-object``: a fourth kind of object appears, ``pallet`` (a low, wide, pale wooden
  pallet with dark gaps between its slats); its ground truth says ``pallet`` whatever the
  schema, so a reviewer draws it only once the schema has the class
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES: tuple[str, ...] = ("crate", "barrel", "cone")
SCENARIOS: tuple[str, ...] = ("night", "weather", "new-class-look", "new-camera", "new-object")
#: the object the ``new-object`` scenario brings: a class the schema does not have yet
NEW_OBJECT = "pallet"
NEW_OBJECT_SHARE = 0.45  # of the objects of a frame under the scenario
MIN_VISIBLE = 0.4


def _rng(*parts: object) -> np.random.Generator:
    """A generator seeded by a stable hash of ``parts`` (independent of call order)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


@dataclass(frozen=True)
class CameraSpec:
    """A fixed camera: its background, viewpoint and object scale."""

    name: str
    group: str
    sky: tuple[int, int, int]
    ground: tuple[int, int, int]
    horizon: float  # fraction of the height
    near_size: float  # object size (fraction of the frame) at the bottom edge
    far_size: float  # ... at the horizon
    blocks: tuple[tuple[float, float, float, float, tuple[int, int, int]], ...]
    lane_color: tuple[int, int, int]
    class_mix: tuple[float, ...]
    seed: int = 0
    extra: dict[str, float] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Box:
    """A ground-truth box, normalized ``cx, cy, w, h`` in [0, 1]."""

    label: str
    cx: float
    cy: float
    w: float
    h: float


def camera_spec(name: str, seed: int, group: str = "default") -> CameraSpec:
    """The camera called ``name`` in the fleet of ``seed`` (deterministic).

    Names starting with ``new-`` get the ``new-camera`` viewpoint: high and wide, small
    objects, a paved ground the original fleet never showed.
    """
    rng = _rng("camera", seed, name)
    new_view = name.startswith("new-")
    if new_view:
        sky = (int(rng.integers(150, 190)),) * 3
        ground = tuple(int(v) for v in rng.integers(95, 125, size=3))
        horizon = float(rng.uniform(0.03, 0.08))
        near, far = float(rng.uniform(0.07, 0.09)), float(rng.uniform(0.045, 0.055))
    else:
        sky = (
            int(rng.integers(120, 190)),
            int(rng.integers(160, 215)),
            int(rng.integers(200, 250)),
        )
        ground = (
            int(rng.integers(70, 130)),
            int(rng.integers(90, 150)),
            int(rng.integers(50, 100)),
        )
        horizon = float(rng.uniform(0.25, 0.45))
        near, far = float(rng.uniform(0.20, 0.28)), float(rng.uniform(0.08, 0.11))
    blocks = []
    for _ in range(int(rng.integers(3, 7))):
        x0 = float(rng.uniform(0, 0.9))
        w = float(rng.uniform(0.05, 0.25))
        h = float(rng.uniform(0.05, max(0.06, horizon)))
        color = tuple(int(v) for v in rng.integers(60, 200, size=3))
        blocks.append((x0, w, h, float(rng.uniform(0, 1)), color))
    mix = rng.dirichlet(np.full(len(CLASSES), 4.0))
    return CameraSpec(
        name=name,
        group=group,
        sky=sky,
        ground=ground,
        horizon=horizon,
        near_size=near,
        far_size=far,
        blocks=tuple(blocks),
        lane_color=tuple(int(v) for v in rng.integers(170, 240, size=3)),
        class_mix=tuple(float(m) for m in mix),
        seed=seed,
    )


# ---- drawing --------------------------------------------------------------------------------
def _background(cam: CameraSpec, size: int) -> Image.Image:
    img = Image.new("RGB", (size, size), cam.sky)
    d = ImageDraw.Draw(img)
    hy = int(cam.horizon * size)
    d.rectangle([0, hy, size, size], fill=cam.ground)
    for x0, w, h, _, color in cam.blocks:  # buildings on the horizon
        d.rectangle([int(x0 * size), hy - int(h * size), int((x0 + w) * size), hy], fill=color)
        for wy in range(hy - int(h * size) + 4, hy - 3, 8):  # windows
            d.line(
                [int(x0 * size) + 3, wy, int((x0 + w) * size) - 3, wy],
                fill=tuple(max(0, c - 40) for c in color),
                width=2,
            )
    # lanes converging to the horizon
    cx = size // 2
    for off in (-0.35, 0.0, 0.35):
        d.line(
            [cx + int(off * size * 0.2), hy, cx + int(off * size * 1.4), size],
            fill=cam.lane_color,
            width=2,
        )
    return img


def _texture(cam: CameraSpec, size: int) -> np.ndarray:
    """Static per-camera ground texture (gravel), as a signed offset image."""
    rng = _rng("texture", cam.seed, cam.name, size)
    tex = rng.normal(0, 9, size=(size, size, 1)).astype(np.float32)
    return np.repeat(tex, 3, axis=2)


def _draw_crate(d: ImageDraw.ImageDraw, x0, y0, x1, y1, rng, plastic: bool) -> None:
    if plastic:  # the new-class-look: green plastic crate, grid of holes, no planks
        base = (int(rng.integers(30, 60)), int(rng.integers(140, 180)), int(rng.integers(60, 100)))
        d.rectangle([x0, y0, x1, y1], fill=base, outline=(20, 80, 40), width=2)
        w, h = x1 - x0, y1 - y0
        for i in range(1, 4):
            for j in range(1, 4):
                cx, cy = x0 + w * i / 4, y0 + h * j / 4
                r = max(1, int(min(w, h) / 14))
                d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(15, 60, 30))
        return
    base = (int(rng.integers(125, 160)), int(rng.integers(80, 100)), int(rng.integers(30, 50)))
    dark = tuple(int(c * 0.55) for c in base)
    d.rectangle([x0, y0, x1, y1], fill=base, outline=dark, width=2)
    h = y1 - y0
    for k in (1, 2):
        y = y0 + h * k / 3
        d.line([x0, y, x1, y], fill=dark, width=2)
    d.line([x0, y0, x1, y1], fill=dark, width=2)
    d.line([x0, y1, x1, y0], fill=dark, width=2)


def _draw_barrel(d: ImageDraw.ImageDraw, x0, y0, x1, y1, rng) -> None:
    base = (int(rng.integers(30, 55)), int(rng.integers(70, 100)), int(rng.integers(160, 200)))
    w, h = x1 - x0, y1 - y0
    d.rounded_rectangle([x0, y0, x1, y1], radius=max(1, int(w / 4)), fill=base)
    light = (200, 205, 215)
    for k in (0.28, 0.72):
        y = y0 + h * k
        d.line([x0 + 1, y, x1 - 1, y], fill=light, width=max(2, int(h / 14)))
    d.ellipse([x0, y0, x1, y0 + max(3, h / 6)], fill=tuple(min(255, c + 50) for c in base))


def _draw_cone(d: ImageDraw.ImageDraw, x0, y0, x1, y1, rng) -> None:
    base = (int(rng.integers(230, 255)), int(rng.integers(100, 140)), int(rng.integers(0, 40)))
    w, h = x1 - x0, y1 - y0
    bh = max(2, h * 0.12)
    d.rectangle([x0, y1 - bh, x1, y1], fill=(40, 40, 40))
    d.polygon([(x0 + w * 0.12, y1 - bh), (x1 - w * 0.12, y1 - bh), (x0 + w / 2, y0)], fill=base)
    # white reflective band
    ya, yb = y0 + h * 0.42, y0 + h * 0.58
    half_a = (w * 0.38) * (ya - y0) / (y1 - bh - y0 + 1e-6)
    half_b = (w * 0.38) * (yb - y0) / (y1 - bh - y0 + 1e-6)
    cx = x0 + w / 2
    d.polygon(
        [(cx - half_a, ya), (cx + half_a, ya), (cx + half_b, yb), (cx - half_b, yb)],
        fill=(245, 245, 245),
    )


def _draw_pallet(d: ImageDraw.ImageDraw, x0, y0, x1, y1, rng) -> None:
    wood = (int(rng.integers(200, 230)), int(rng.integers(175, 200)), int(rng.integers(120, 150)))
    dark = (60, 45, 30)
    d.rectangle([x0, y0, x1, y1], fill=dark)
    h = y1 - y0
    d.rectangle([x0, y0, x1, y0 + h * 0.35], fill=wood)  # top deck
    n = 3
    for k in range(n):  # blocks, with dark openings between them
        bx0 = x0 + (x1 - x0) * (k / (n - 1)) * 0.85
        d.rectangle([bx0, y0 + h * 0.35, bx0 + (x1 - x0) * 0.15, y1], fill=wood)
    for k in range(1, 5):  # gaps between the deck boards
        gx = x0 + (x1 - x0) * k / 5
        d.line([gx, y0, gx, y0 + h * 0.35], fill=dark, width=1)


def _draw_distractor(d: ImageDraw.ImageDraw, x0, y0, x1, y1, rng) -> None:
    kind = int(rng.integers(0, 4))
    grey = int(rng.integers(90, 170))
    if kind == 0:  # concrete block
        d.rectangle([x0, y0, x1, y1], fill=(grey, grey, grey), outline=(grey - 40,) * 3)
    elif kind == 1:  # bush
        d.ellipse([x0, y0, x1, y1], fill=(30, int(rng.integers(90, 140)), 40))
    elif kind == 2:  # pole
        cx = (x0 + x1) / 2
        d.rectangle([cx - 2, y0 - (y1 - y0), cx + 2, y1], fill=(70, 70, 70))
    else:  # sign
        d.rectangle([x0, y0, x1, (y0 + y1) / 2], fill=(230, 230, 230), outline=(20, 20, 20))
        d.line([(x0 + x1) / 2, (y0 + y1) / 2, (x0 + x1) / 2, y1], fill=(60, 60, 60), width=2)


_ASPECT = {"crate": (0.9, 1.1), "barrel": (1.3, 1.6), "cone": (1.2, 1.5)}  # h / w


@dataclass(frozen=True)
class _Placed:
    label: str | None  # None = distractor
    x0: float
    y0: float
    x1: float
    y1: float
    seed: int


def layout(
    cam: CameraSpec,
    event: int,
    size: int,
    classes: tuple[str, ...] = CLASSES,
) -> list[_Placed]:
    """The objects of one capture event (a burst of frames), far to near."""
    rng = _rng("event", cam.seed, cam.name, event)
    n_obj = int(min(8, rng.poisson(3.0)))
    n_dis = int(rng.integers(1, 4))
    placed = []
    hy = cam.horizon
    for k in range(n_obj + n_dis):
        is_obj = k < n_obj
        y_bottom = float(rng.uniform(hy + 0.12, 1.0))
        t = (y_bottom - hy) / (1 - hy)
        s = (cam.far_size + (cam.near_size - cam.far_size) * t) * float(rng.uniform(0.75, 1.3))
        if is_obj:
            mix = np.array(cam.class_mix[: len(classes)])
            label = classes[int(rng.choice(len(classes), p=mix / mix.sum()))]
            lo, hi = _ASPECT.get(label, (0.9, 1.2))
            aspect = float(rng.uniform(lo, hi))
        else:
            label, aspect = None, float(rng.uniform(0.6, 1.4))
        w = s / np.sqrt(aspect)
        h = s * np.sqrt(aspect)
        cx = float(rng.uniform(w / 2, 1 - w / 2))
        y1 = min(y_bottom, 1.0)
        placed.append(
            _Placed(
                label,
                (cx - w / 2) * size,
                (y1 - h) * size,
                (cx + w / 2) * size,
                y1 * size,
                int(rng.integers(0, 2**31)),
            )
        )
    placed.sort(key=lambda p: p.y1)  # far first: nearer objects occlude
    return placed


def _with_new_objects(objects: list[_Placed]) -> list[_Placed]:
    """Some labelled objects become pallets: the same foot point and width, low and wide
    (height 0.35-0.5 of the width); the other objects, and so the frame's layout, stay."""
    out = []
    for p in objects:
        rng = np.random.default_rng([p.seed, 4])
        if p.label is not None and rng.random() < NEW_OBJECT_SHARE:
            w = (p.x1 - p.x0) * float(rng.uniform(1.2, 1.5))
            h = w * float(rng.uniform(0.35, 0.5))
            cx = (p.x0 + p.x1) / 2
            p = _Placed(NEW_OBJECT, cx - w / 2, p.y1 - h, cx + w / 2, p.y1, p.seed)
        out.append(p)
    return out


def render(
    cam: CameraSpec,
    event: int,
    frame_in_event: int,
    size: int,
    scenarios: frozenset[str] = frozenset(),
    classes: tuple[str, ...] = CLASSES,
    motion_px: float = 3.0,
) -> tuple[np.ndarray, list[Box]]:
    """Pixels (``size x size x 3`` uint8 RGB) and ground-truth boxes of one frame.

    Frames of the same ``event`` share their objects, which drift by ``motion_px`` per
    frame, so bursts contain near-duplicates as real event-triggered captures do.
    """
    img = _background(cam, size)
    d = ImageDraw.Draw(img)
    mask = Image.new("I", (size, size), 0)
    md = ImageDraw.Draw(mask)
    drift_rng = _rng("drift", cam.seed, cam.name, event)
    dx = float(drift_rng.uniform(-1, 1)) * motion_px * frame_in_event
    dy = float(drift_rng.uniform(-0.3, 0.3)) * motion_px * frame_in_event
    objects = layout(cam, event, size, classes)
    if "new-object" in scenarios:
        objects = _with_new_objects(objects)
    areas: dict[int, float] = {}
    for idx, p in enumerate(objects, start=1):
        x0, y0, x1, y1 = p.x0 + dx, p.y0 + dy, p.x1 + dx, p.y1 + dy
        rng = np.random.default_rng(p.seed)
        if p.label == "crate":
            _draw_crate(d, x0, y0, x1, y1, rng, plastic="new-class-look" in scenarios)
        elif p.label == "barrel":
            _draw_barrel(d, x0, y0, x1, y1, rng)
        elif p.label == "cone":
            _draw_cone(d, x0, y0, x1, y1, rng)
        elif p.label == NEW_OBJECT:
            _draw_pallet(d, x0, y0, x1, y1, rng)
        else:
            _draw_distractor(d, x0, y0, x1, y1, rng)
        md.rectangle([x0, y0, x1, y1], fill=idx)
        areas[idx] = max(1.0, (min(x1, size) - max(x0, 0)) * (min(y1, size) - max(y0, 0)))

    mask_np = np.asarray(mask)
    counts = np.bincount(mask_np.ravel(), minlength=len(objects) + 1)
    boxes = []
    for idx, p in enumerate(objects, start=1):
        if p.label is None:
            continue
        if counts[idx] / areas[idx] < MIN_VISIBLE:
            continue
        x0 = max(0.0, p.x0 + dx)
        y0 = max(0.0, p.y0 + dy)
        x1 = min(float(size), p.x1 + dx)
        y1 = min(float(size), p.y1 + dy)
        if x1 - x0 < 3 or y1 - y0 < 3:
            continue
        boxes.append(
            Box(
                p.label,
                (x0 + x1) / 2 / size,
                (y0 + y1) / 2 / size,
                (x1 - x0) / size,
                (y1 - y0) / size,
            )
        )

    pixels = np.asarray(img, dtype=np.float32) + _texture(cam, size)
    frame_rng = _rng("frame", cam.seed, cam.name, event, frame_in_event)
    pixels *= float(frame_rng.uniform(0.9, 1.1))  # exposure jitter
    pixels = _apply_scenarios(pixels, scenarios, frame_rng, size)
    return np.clip(pixels, 0, 255).astype(np.uint8), boxes


def _apply_scenarios(
    px: np.ndarray, scenarios: frozenset[str], rng: np.random.Generator, size: int
) -> np.ndarray:
    if "weather" in scenarios:
        img = Image.fromarray(np.clip(px, 0, 255).astype(np.uint8))
        d = ImageDraw.Draw(img, "RGBA")
        for _ in range(int(size * 1.8)):
            x, y = float(rng.uniform(0, size)), float(rng.uniform(0, size))
            length = float(rng.uniform(10, 28))
            d.line(
                [x, y, x + length * 0.35, y + length],
                fill=(225, 225, 240, 170),
                width=int(rng.integers(1, 3)),
            )
        img = img.filter(ImageFilter.GaussianBlur(radius=3.0))
        px = np.asarray(img, dtype=np.float32)
        grey = px.mean(axis=2, keepdims=True)
        px = px * 0.4 + grey * 0.6  # wet, washed-out colours
        px = px * 0.38 + 165 * 0.62  # fog: most of the contrast gone
    if "night" in scenarios:
        px = (np.clip(px, 0, 255) / 255.0) ** 1.8 * 255.0 * 0.2  # dark, low contrast
        px = px * np.array([0.7, 0.8, 1.3], dtype=np.float32)  # blue cast of night lighting
        px = px + rng.normal(0, 14, size=px.shape).astype(np.float32)  # sensor noise
    return px


def encode_jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of an RGB frame (deterministic for a given libjpeg)."""
    import io

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality, optimize=False)
    return buf.getvalue()

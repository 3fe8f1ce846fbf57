"""Runbook step 1: collect the last N days of production frames from the frame store.

Images are read as they are; videos are sampled at ``video_fps`` by *seeking* to each
sample time (the cost is in proportion to the samples, not to the video's frames).
Frames that cannot be decoded (corrupt, truncated, not an image) go to a quarantine list
with the reason, and the collection continues. Near-duplicates (perceptual hash within
``near_dup_bits`` of a frame already kept from the same camera) are dropped.

The result is a small table (Parquet) of collected frames — key, camera, time, content
hash, perceptual hash, source — never the pixels themselves.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cvloop.adapters.detector import check_pixels
from cvloop.adapters.frame_keys import VIDEO_KEY_SEP
from cvloop.adapters.storage import Storage, validate_key
from cvloop.core.errors import CvloopError, StorageError
from cvloop.core.frames import content_hash, dhash, hamming
from cvloop.core.keylayout import KeyTemplate, time_out_of_range

if TYPE_CHECKING:
    from cvloop.config.params import CollectParams
    from cvloop.context import Context


@dataclass(frozen=True)
class Collected:
    key: str  # frame key, or "<video key>#t=<ms>" for a sampled video frame
    camera: str
    ts_ms: int
    sha256: str
    dhash: str
    source: str  # image | video


@dataclass
class Quarantined:
    key: str
    reason: str


@dataclass
class CollectReport:
    collected: list[Collected] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    near_duplicates: int = 0
    video_samples: int = 0

    def summary(self) -> dict:
        return {
            "collected": len(self.collected),
            "quarantined": len(self.quarantined),
            "near_duplicates_dropped": self.near_duplicates,
            "video_samples": self.video_samples,
        }


def _decode(data: bytes) -> np.ndarray | None:
    import cv2

    if len(data) < 4:
        return None
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _is_truncated_jpeg(data: bytes) -> bool:
    return data[:2] == b"\xff\xd8" and not data.rstrip(b"\x00").endswith(b"\xff\xd9")


def sample_video(path: Path, fps: float) -> Iterator[tuple[int, np.ndarray]]:
    """(offset ms, RGB frame) every ``1/fps`` seconds, by seeking — not decoding all."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError("cannot open video")
    try:
        native = cap.get(cv2.CAP_PROP_FPS) or 30.0
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        duration_ms = count / native * 1000
        step = 1000.0 / fps
        t = 0.0
        while t < duration_ms:
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(round(t / 1000 * native)))
            ok, frame = cap.read()
            if not ok:
                break
            yield int(round(t)), cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            t += step
    finally:
        cap.release()


def _days(end: dt.date, days: int) -> list[dt.date]:
    return [end - dt.timedelta(days=i) for i in range(days, 0, -1)]


@dataclass(frozen=True)
class FrameLayout:
    """The frame store's key layout (params.yaml ``frames``): image and video templates and
    where a frame's capture time comes from."""

    images: str = "frames/{camera}/{date}/{ts_ms}.{ext}"
    videos: str = "videos/{camera}/{date}/{ts_ms}.{ext}"
    timestamp: str = "key"

    @classmethod
    def of(cls, frames) -> FrameLayout:
        return cls(frames.images, frames.videos, frames.timestamp)


@dataclass(frozen=True)
class _Found:
    key: str
    camera: str
    ts_ms: int | None  # None: read from the image (EXIF)
    modified_ms: int


IMAGE_EXTS = (".jpg", ".jpeg", ".png")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv")


def _found(store: Storage, tmpl: KeyTemplate, rule: str, cam: str, days: list[dt.date],
           exts: tuple[str, ...], strays: bool):  # fmt: skip
    """(day -> the objects of ``cam`` on that day in the layout ``tmpl``, the keys under its
    prefix that do not fit it). Listed by day where the template allows, else by camera; a
    file of the other kind (a clip among images) is left to the other template; a file of
    neither kind is a misfit of the pass with ``strays`` (so it is reported once)."""
    wanted = set(days)
    prefixes = ([tmpl.prefix(cam, d) for d in days] if tmpl.lists_by_day()
                else [tmpl.prefix(cam)])  # fmt: skip
    out: dict[dt.date, list[_Found]] = {d: [] for d in days}
    misfits: list[tuple[str, str | None]] = []  # (key, reason: None = does not fit the layout)
    for prefix in prefixes:
        for info in store.list(prefix):
            if (bad := _unusable_key(info.key)) is not None:
                misfits.append((info.key, bad))
                continue
            low = info.key.lower()
            media = low.endswith(IMAGE_EXTS + VIDEO_EXTS)
            if media and not low.endswith(exts):
                continue
            p = tmpl.parse(info.key)
            if p is None or p.camera != cam:
                hidden = "/." in "/" + info.key  # a writer's temp file
                if p is None and not hidden and (media or strays):
                    bad_ts = time_out_of_range(info.key, tmpl)
                    misfits.append((info.key, None if bad_ts is None else
                                    f"the time in the key ({bad_ts}) is not a capture time "
                                    "(before 1970 or after 2200)"))  # fmt: skip
                continue
            modified = int(info.modified.timestamp() * 1000)
            ts = {"key": p.ts_ms, "object": modified}.get(rule)  # exif: read with the image
            day = p.day or (dt.datetime.fromtimestamp(ts / 1000, dt.UTC).date() if ts else None)
            if day is None:  # exif without {date}: the object's day decides the window
                day = dt.datetime.fromtimestamp(modified / 1000, dt.UTC).date()
            if day in wanted:
                out[day].append(_Found(info.key, cam, ts, modified))
    return out, misfits


def _unusable_key(key: str) -> str | None:
    """Why no store call can name ``key`` ('frames//x', '../', a backslash), or None."""
    try:
        validate_key(key)
    except StorageError as exc:
        return f"unusable object key: {exc.message}"
    return None


def _misfit_reason(key: str, tmpl: KeyTemplate) -> str:
    if not key.lower().endswith(IMAGE_EXTS + VIDEO_EXTS):
        return "not an image file (expected .jpg/.jpeg/.png)"
    what = "frames.videos" if key.lower().endswith(VIDEO_EXTS) else "frames.images"
    return f"the key does not fit the layout {what} {tmpl.template!r}"


def collect(
    store: Storage,
    end: dt.date,
    days: int,
    *,
    cameras: list[str] | None = None,
    video_fps: float = 1.0,
    near_dup_bits: int = 4,
    layout: FrameLayout | None = None,
) -> CollectReport:
    """Frames of the ``days`` days before ``end`` (exclusive), images and sampled videos,
    wherever ``layout`` (default: cvloop's own) says they are."""
    layout = layout or FrameLayout()
    images = KeyTemplate(layout.images, "frames.images")
    videos = KeyTemplate(layout.videos, "frames.videos")
    rep = CollectReport()
    unusable: dict[str, str] = {}
    found_cams: set[str] = set()
    if not cameras:
        for t in (images, videos):
            for k in store.keys(t.prefix()):
                if (bad := _unusable_key(k)) is not None:  # reported once, the rest goes on
                    unusable[k] = bad
                    continue
                if (p := t.parse(k)) is not None:
                    found_cams.add(p.camera)
    rep.quarantined += [Quarantined(k, why) for k, why in sorted(unusable.items())]
    cams = cameras or sorted(found_cams)
    window = _days(end, days)
    video_rule = "key" if videos.has_time else "object"  # a clip's start time; no EXIF
    for cam in cams:
        kept: list[int] = []  # recent hashes of this camera (near-duplicate window)
        imgs, img_misfits = _found(store, images, layout.timestamp, cam, window, IMAGE_EXTS,
                                   strays=True)  # fmt: skip
        vids, vid_misfits = _found(store, videos, video_rule, cam, window, VIDEO_EXTS,
                                   strays=False)  # fmt: skip
        rep.quarantined += [Quarantined(k, why or _misfit_reason(k, images))
                            for k, why in img_misfits]  # fmt: skip
        rep.quarantined += [Quarantined(k, why or _misfit_reason(k, videos))
                            for k, why in vid_misfits]  # fmt: skip
        for day in window:
            for f in sorted(imgs[day], key=lambda f: f.key):
                _take_image(store, f, rep, kept, near_dup_bits)
            for f in sorted(vids[day], key=lambda f: f.key):
                _take_video(store, f, rep, kept, near_dup_bits, video_fps)
    return rep


def _keep(rep: CollectReport, item: Collected, h: int, kept: list[int], bits: int) -> None:
    if any(hamming(h, o) <= bits for o in kept[-64:]):
        rep.near_duplicates += 1
        return
    kept.append(h)
    rep.collected.append(item)


def exif_time_ms(data: bytes) -> int | None:
    """DateTimeOriginal (with OffsetTimeOriginal; UTC without one) in epoch ms, or None."""
    from PIL import Image

    try:
        exif = Image.open(io.BytesIO(data)).getexif().get_ifd(0x8769)  # the Exif IFD
    except Exception:
        return None
    raw = exif.get(0x9003) or exif.get(0x9004)  # DateTimeOriginal, DateTimeDigitized
    if not raw:
        return None
    try:
        when = dt.datetime.strptime(str(raw).strip("\x00 "), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    offset = str(exif.get(0x9011) or "").strip("\x00 ")  # OffsetTimeOriginal, e.g. +02:00
    tz = dt.UTC
    if len(offset) == 6 and offset[0] in "+-":
        sign = 1 if offset[0] == "+" else -1
        tz = dt.timezone(sign * dt.timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])))
    return int(when.replace(tzinfo=tz).timestamp() * 1000)


def _take_image(store, f: _Found, rep, kept, bits) -> None:
    key = f.key
    data = store.get_bytes(key)
    try:
        check_pixels(data)
    except CvloopError as exc:
        rep.quarantined.append(Quarantined(key, f"{exc.message}; {exc.fix}"))
        return
    ts = f.ts_ms if f.ts_ms is not None else exif_time_ms(data)
    if ts is None:
        rep.quarantined.append(Quarantined(key, "no capture time: no DateTimeOriginal in its "
                                           "EXIF (frames.timestamp: exif)"))  # fmt: skip
        return
    if _is_truncated_jpeg(data):
        rep.quarantined.append(Quarantined(key, "truncated JPEG (no end-of-image marker)"))
        return
    pixels = _decode(data)
    if pixels is None:
        rep.quarantined.append(Quarantined(key, "unreadable: not a decodable image"))
        return
    h = dhash(pixels)
    item = Collected(key, f.camera, ts, content_hash(data), f"{h:016x}", "image")
    _keep(rep, item, h, kept, bits)


def _take_video(store, f: _Found, rep, kept, bits, fps) -> None:
    import cv2

    key, start = f.key, f.ts_ms if f.ts_ms is not None else f.modified_ms
    with tempfile.TemporaryDirectory() as tmp:
        local = store.local_path(key) or store.get_file(key, Path(tmp) / "clip.mp4")
        try:
            for offset, pixels in sample_video(Path(local), fps):
                _ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
                h = dhash(pixels)
                rep.video_samples += 1
                item = Collected(
                    f"{key}{VIDEO_KEY_SEP}{offset}",
                    f.camera,
                    start + offset,
                    content_hash(jpeg.tobytes()),
                    f"{h:016x}",
                    "video",
                )
                _keep(rep, item, h, kept, bits)
        except ValueError as exc:
            rep.quarantined.append(Quarantined(key, f"unreadable video: {exc}"))


def to_parquet(items: list[Collected]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(
        [asdict(c) for c in items],
        schema=pa.schema(
            [
                ("key", pa.string()),
                ("camera", pa.string()),
                ("ts_ms", pa.int64()),
                ("sha256", pa.string()),
                ("dhash", pa.string()),
                ("source", pa.string()),
            ]
        ),
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


@dataclass(frozen=True)
class CollectedBatch:
    """Where the collection was written, and its counts (tasks pass keys, not frames)."""

    frames_key: str
    quarantine_key: str
    summary: dict


def collect_frames(
    ctx: Context,
    run_id: str,
    end: str | None,
    cp: CollectParams,
    days: int | None = None,
    cameras: list[str] | None = None,
    base: str | None = None,
) -> CollectedBatch:
    """Collect ``days`` (default ``cp.days``) up to ``end`` with ``params.yaml``'s
    ``collect`` section, then write ``collected.parquet`` and ``quarantine.json`` under the
    run's folder in the store (a re-run of the same flow run rewrites the same keys)."""
    store = ctx.store
    end_day = dt.date.fromisoformat(end[:10]) if end else dt.date.today()
    rep = collect(store, end_day, days or cp.days, cameras=cameras, video_fps=cp.video_fps,
                  near_dup_bits=cp.near_duplicate_hamming,
                  layout=FrameLayout.of(ctx.params.frames))  # fmt: skip
    base = base or f"runs/retrain/{run_id}"
    store.put_bytes(f"{base}/collected.parquet", to_parquet(rep.collected))
    store.put_text(
        f"{base}/quarantine.json", json.dumps([asdict(q) for q in rep.quarantined], indent=2)
    )
    return CollectedBatch(f"{base}/collected.parquet", f"{base}/quarantine.json", rep.summary())

"""Reviewed labels of production frames, looked up by frame key (schema ``labels/v1``).

Where a person has labeled frames the fleet served (the weekly audit sample, a review), the
labels are kept here so that anything judging models on production traffic — the rollout's
canary first — can score both models on the truth instead of on each other. Layout in the
store (Parquet, partitioned by the frame's capture date, Hive style, like the inference
log)::

    labels/date=YYYY-MM-DD/part-<id>.parquet

One row per labeled frame:

========================  ========================  ==========================================
column                    type                      meaning
========================  ========================  ==========================================
``ts``                    timestamp[ms, UTC]        capture time of the frame
``camera``                string                    camera name
``frame_key``             string                    key of the frame in the frame store
``boxes``                 list<struct>              ``label`` string, ``cx, cy, w, h`` float32
                                                    normalized to [0, 1]; empty: nothing there
``source``                string                    e.g. ``audit``, ``review``
``reviewer``              string                    who labeled it
``reviewed_at``           timestamp[ms, UTC]        when
``label_policy_version``  int32                     the labeling policy it follows
========================  ========================  ==========================================

A frame labeled twice keeps its newest labels (``reviewed_at``). Parts are never appended
to; re-writing a batch with the same part name replaces it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cvloop.adapters.parquet import read_parquet
from cvloop.adapters.storage import Storage
from cvloop.core.errors import CvloopError
from cvloop.core.frames import LabelBox

LABELS_PREFIX = "labels"
SCHEMA_VERSION = "labels/v1"

BOX_TYPE = pa.struct(
    [
        ("label", pa.string()),
        ("cx", pa.float32()),
        ("cy", pa.float32()),
        ("w", pa.float32()),
        ("h", pa.float32()),
    ]
)
SCHEMA = pa.schema(
    [
        ("ts", pa.timestamp("ms", tz="UTC")),
        ("camera", pa.string()),
        ("frame_key", pa.string()),
        ("boxes", pa.list_(BOX_TYPE)),
        ("source", pa.string()),
        ("reviewer", pa.string()),
        ("reviewed_at", pa.timestamp("ms", tz="UTC")),
        ("label_policy_version", pa.int32()),
    ],
    metadata={"cvloop.schema": SCHEMA_VERSION},
)


@dataclass
class LabeledFrame:
    """One production frame with a person's labels."""

    ts: dt.datetime
    camera: str
    frame_key: str
    boxes: list[LabelBox] = field(default_factory=list)
    source: str = "audit"
    reviewer: str = ""
    reviewed_at: dt.datetime | None = None
    label_policy_version: int = 1


class LabelStoreError(CvloopError):
    """A batch of labels does not follow ``labels/v1``."""


def _table(frames: Sequence[LabeledFrame]) -> pa.Table:
    now = dt.datetime.now(dt.UTC)
    for f in frames:
        if f.ts.tzinfo is None:
            raise LabelStoreError(f"labels of {f.frame_key}: ts must be timezone-aware (UTC)")
        for b in f.boxes:
            if not all(0.0 <= v <= 1.0 for v in (b.cx, b.cy, b.w, b.h)):
                raise LabelStoreError(
                    f"labels of {f.frame_key}: box {(b.cx, b.cy, b.w, b.h)} of {b.label!r} is "
                    "not normalized to [0, 1]",
                    fix="divide pixel coordinates by the frame width/height",
                )
    return pa.table(
        {
            "ts": pa.array([f.ts for f in frames], pa.timestamp("ms", tz="UTC")),
            "camera": [f.camera for f in frames],
            "frame_key": [f.frame_key for f in frames],
            "boxes": pa.array([[b.__dict__ for b in f.boxes] for f in frames], pa.list_(BOX_TYPE)),
            "source": [f.source for f in frames],
            "reviewer": [f.reviewer for f in frames],
            "reviewed_at": pa.array(
                [f.reviewed_at or now for f in frames], pa.timestamp("ms", tz="UTC")
            ),
            "label_policy_version": pa.array([f.label_policy_version for f in frames], pa.int32()),
        },
        schema=SCHEMA,
    )


def write_labels(
    store: Storage, frames: Sequence[LabeledFrame], part: str | None = None
) -> list[str]:
    """Write labeled frames, one part per capture date; returns the keys written."""
    if not frames:
        return []
    table = _table(list(frames))
    pid = (
        part
        or hashlib.sha256(
            "|".join(sorted(f"{f.frame_key}@{f.reviewed_at}" for f in frames)).encode()
        ).hexdigest()[:20]
    )
    dates = pc.strftime(table.column("ts"), format="%Y-%m-%d")
    keys = []
    for date in sorted(set(dates.to_pylist())):
        buf = io.BytesIO()
        pq.write_table(table.filter(pc.equal(dates, date)), buf, compression="zstd")
        key = f"{LABELS_PREFIX}/date={date}/part-{pid}.parquet"
        store.put_bytes(key, buf.getvalue())
        keys.append(key)
    return keys


def read_labels(
    store: Storage,
    start: dt.datetime,
    end: dt.datetime,
    frame_keys: Iterable[str] | None = None,
) -> dict[str, LabeledFrame]:
    """Labeled frames captured with ``start <= ts < end`` (newest labels per frame), by key.

    A part that cannot be read is an error naming its key (labels are never skipped in
    silence: a judgment made without them would claim evidence it did not have).
    """
    wanted = set(frame_keys) if frame_keys is not None else None
    day, last = start.astimezone(dt.UTC).date(), (end - dt.timedelta(milliseconds=1)).date()
    out: dict[str, LabeledFrame] = {}
    while day <= last:
        for key in store.keys(f"{LABELS_PREFIX}/date={day.isoformat()}/"):
            if not key.endswith(".parquet"):
                continue
            try:
                t = read_parquet(store.get_bytes(key)).cast(SCHEMA)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
                raise LabelStoreError(
                    f"labels part {key} cannot be read as {SCHEMA_VERSION}: {exc}",
                    fix="rewrite it with cvloop.adapters.label_store.write_labels, or move it out of "
                    f"{LABELS_PREFIX}/",
                ) from None
            for row in t.to_pylist():
                if not start <= row["ts"] < end:
                    continue
                if wanted is not None and row["frame_key"] not in wanted:
                    continue
                prev = out.get(row["frame_key"])
                if prev is not None and prev.reviewed_at >= row["reviewed_at"]:
                    continue
                out[row["frame_key"]] = LabeledFrame(
                    row["ts"], row["camera"], row["frame_key"],
                    [LabelBox(**b) for b in row["boxes"]], row["source"], row["reviewer"],
                    row["reviewed_at"], row["label_policy_version"],
                )  # fmt: skip
        day += dt.timedelta(days=1)
    return out

"""The inference log: what the serving fleet records for every frame.

Every drift signal and every canary check is computed from it; the demo's simulated fleet
writes exactly this format, and a real fleet would too. See ``docs/inference-log.md``.

Layout in the store (Parquet, partitioned by UTC date, Hive style)::

    inference-log/date=YYYY-MM-DD/part-<id>.parquet

One row per served frame (schema ``inference-log/v1``):

================  ===========================  ===============================================
column            type                         meaning
================  ===========================  ===============================================
``ts``            timestamp[ms, UTC]           capture time of the frame
``camera``        string                       camera name
``camera_group``  string                       camera group / region (``default``)
``frame_key``     string                       key of the frame in the frame store
``model_version`` string                       registered model version that served it
``latency_ms``    float32                      inference latency (pre + model + post)
``error``         string, nullable             serving error; null when served
``detections``    list<struct>                 one entry per detection:
                                               ``label`` string, ``conf`` float32,
                                               ``cx, cy, w, h`` float32 normalized to [0, 1]
================  ===========================  ===============================================

A file is never appended to: each write creates a part named by the caller (or by a hash of
its rows), so writing the same batch again replaces it instead of duplicating it.
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

from cvloop.adapters.storage import Storage
from cvloop.core.errors import CvloopError

LOG_PREFIX = "inference-log"
#: detections of a version in shadow (a copy of live frames, never returned): same schema
SHADOW_PREFIX = "inference-log-shadow"
SCHEMA_VERSION = "inference-log/v1"

DETECTION_TYPE = pa.struct(
    [
        ("label", pa.string()),
        ("conf", pa.float32()),
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
        ("camera_group", pa.string()),
        ("frame_key", pa.string()),
        ("model_version", pa.string()),
        ("latency_ms", pa.float32()),
        ("error", pa.string()),
        ("detections", pa.list_(DETECTION_TYPE)),
    ],
    metadata={"cvloop.schema": SCHEMA_VERSION},
)


@dataclass(frozen=True)
class Detection:
    label: str
    conf: float
    cx: float
    cy: float
    w: float
    h: float


@dataclass
class FrameRecord:
    """One served frame."""

    ts: dt.datetime
    camera: str
    frame_key: str
    model_version: str
    latency_ms: float
    detections: list[Detection] = field(default_factory=list)
    camera_group: str = "default"
    error: str | None = None


class LogSchemaError(CvloopError):
    """A batch does not follow the inference-log contract."""


def to_table(records: Sequence[FrameRecord]) -> pa.Table:
    """Records -> an Arrow table in the log schema (validated)."""
    for r in records:
        if r.ts.tzinfo is None:
            raise LogSchemaError(f"frame {r.frame_key}: ts must be timezone-aware (UTC)")
        for d in r.detections:
            if not 0.0 <= d.conf <= 1.0:
                raise LogSchemaError(f"frame {r.frame_key}: confidence {d.conf} outside [0, 1]")
            if not all(0.0 <= v <= 1.0 for v in (d.cx, d.cy, d.w, d.h)):
                raise LogSchemaError(
                    f"frame {r.frame_key}: box {(d.cx, d.cy, d.w, d.h)} is not normalized to [0, 1]",
                    fix="divide pixel coordinates by the frame width/height",
                )
    return pa.table(
        {
            "ts": pa.array([r.ts for r in records], pa.timestamp("ms", tz="UTC")),
            "camera": [r.camera for r in records],
            "camera_group": [r.camera_group for r in records],
            "frame_key": [r.frame_key for r in records],
            "model_version": [r.model_version for r in records],
            "latency_ms": pa.array([r.latency_ms for r in records], pa.float32()),
            "error": pa.array([r.error for r in records], pa.string()),
            "detections": pa.array(
                [[d.__dict__ for d in r.detections] for r in records], pa.list_(DETECTION_TYPE)
            ),
        },
        schema=SCHEMA,
    )


def _conform(table: pa.Table) -> pa.Table:
    missing = [n for n in SCHEMA.names if n not in table.column_names]
    if missing:
        raise LogSchemaError(
            f"inference-log batch lacks columns {missing}",
            fix=f"write the {SCHEMA_VERSION} schema (docs/inference-log.md)",
        )
    try:
        return table.select(SCHEMA.names).cast(SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise LogSchemaError(
            f"inference-log batch does not match {SCHEMA_VERSION}: {exc}"
        ) from None


def part_id(table: pa.Table) -> str:
    """A stable id for a batch: the hash of its frame keys, model versions and times."""
    h = hashlib.sha256()
    for col in ("frame_key", "model_version", "ts"):
        h.update(col.encode())
        h.update(str(table.column(col).to_pylist()).encode())
    return h.hexdigest()[:20]


def write_log(
    store: Storage,
    batch: Sequence[FrameRecord] | pa.Table,
    part: str | None = None,
    prefix: str = LOG_PREFIX,
) -> list[str]:
    """Write a batch as one Parquet part per UTC date; returns the keys written.

    Args:
        store: the frame store (or any storage holding the log).
        batch: records or a table in the log schema.
        part: the part name; default a hash of the batch, so re-writing it is idempotent.
    """
    table = batch if isinstance(batch, pa.Table) else to_table(list(batch))
    table = _conform(table)
    if table.num_rows == 0:
        return []
    pid = part or part_id(table)
    dates = pc.strftime(table.column("ts"), format="%Y-%m-%d")
    keys = []
    for date in sorted(set(dates.to_pylist())):
        sub = table.filter(pc.equal(dates, date))
        buf = io.BytesIO()
        pq.write_table(sub, buf, compression="zstd")
        key = f"{prefix}/date={date}/part-{pid}.parquet"
        store.put_bytes(key, buf.getvalue())
        keys.append(key)
    return keys


def _dates(start: dt.datetime, end: dt.datetime) -> Iterable[dt.date]:
    day = start.astimezone(dt.UTC).date()
    last = (end - dt.timedelta(milliseconds=1)).astimezone(dt.UTC).date()
    while day <= last:
        yield day
        day += dt.timedelta(days=1)


def _utc(value: dt.datetime | dt.date) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return dt.datetime.combine(value, dt.time(), tzinfo=dt.UTC)


def read_log(
    store: Storage,
    start: dt.datetime | dt.date,
    end: dt.datetime | dt.date,
    *,
    cameras: Iterable[str] | None = None,
    model_versions: Iterable[str] | None = None,
    columns: Sequence[str] | None = None,
    prefix: str = LOG_PREFIX,
) -> pa.Table:
    """Frames with ``start <= ts < end`` (dates mean midnight UTC), optionally filtered.

    Only the date partitions of the window are listed and read.
    """
    t0, t1 = _utc(start), _utc(end)
    cols = list(columns) if columns else SCHEMA.names
    need = list(dict.fromkeys([*cols, "ts", "camera", "model_version", "frame_key"]))
    parts = []
    for day in _dates(t0, t1):
        for key in store.keys(f"{prefix}/date={day.isoformat()}/"):
            if key.endswith(".parquet"):
                parts.append(pq.read_table(io.BytesIO(store.get_bytes(key)), columns=need))
    schema = pa.schema([SCHEMA.field(n) for n in need], metadata=SCHEMA.metadata)
    if not parts:
        return schema.empty_table().select(cols)
    table = pa.concat_tables([p.cast(schema) for p in parts])
    ts = table.column("ts")
    mask = pc.and_(
        pc.greater_equal(ts, pa.scalar(t0, ts.type)), pc.less(ts, pa.scalar(t1, ts.type))
    )
    if cameras is not None:
        mask = pc.and_(mask, pc.is_in(table.column("camera"), pa.array(list(cameras), pa.string())))
    if model_versions is not None:
        mask = pc.and_(
            mask,
            pc.is_in(table.column("model_version"), pa.array(list(model_versions), pa.string())),
        )
    table = table.filter(mask)
    return table.sort_by([("ts", "ascending"), ("frame_key", "ascending")]).select(cols)


def flatten_detections(table: pa.Table) -> pa.Table:
    """One row per detection, with its frame's ``ts``, ``camera``, ``camera_group`` and
    ``model_version`` (frames without detections contribute no row)."""
    dets = table.column("detections")
    parents = pc.list_parent_indices(dets)
    flat = pc.list_flatten(dets)
    out = {}
    for name in ("ts", "camera", "camera_group", "model_version", "frame_key"):
        if name in table.column_names:
            out[name] = pc.take(table.column(name), parents)
    for i, f in enumerate(DETECTION_TYPE):
        out[f.name] = pc.struct_field(flat, [i])
    return pa.table(out)


def detections_per_frame(table: pa.Table) -> pa.Array:
    """Detection count of each frame (the detection-volume signal)."""
    return pc.list_value_length(table.column("detections")).fill_null(0)

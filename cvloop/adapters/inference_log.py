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

**A bad part never stops a reader.** A part that cannot be read as this schema (zero bytes,
truncated, not Parquet, columns missing or of another type), a part holding rows whose
``ts`` is not of its ``date=`` partition (a clock gone wrong, a hand-copied file), and a part
in a folder that is not ``date=YYYY-MM-DD`` are **quarantined**: moved, bytes unchanged, to
``<prefix>-quarantine/<same path>`` with a ``.reason.json`` beside it (the part, what is
wrong, when, how to put it back), and reported on stderr; every reader goes on with the rest.
:func:`quarantined` lists them for the reports (the monitor, the canary: a window that lost
a part holds, it never promotes).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cvloop.adapters.parquet import read_parquet
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


QUARANTINE_SUFFIX = "-quarantine"
_PARTITION = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
#: a window longer than this is read from one listing of the log, not one listing per day
_LIST_ONCE_DAYS = 62


def quarantine_prefix(prefix: str = LOG_PREFIX) -> str:
    return f"{prefix}{QUARANTINE_SUFFIX}"


def _partition_date(part_dir: str) -> dt.date | None:
    m = _PARTITION.match(part_dir)
    if not m:
        return None
    try:
        return dt.date.fromisoformat(m.group(1))
    except ValueError:  # date=2026-13-45
        return None


def quarantine_part(store: Storage, key: str, reason: str, prefix: str = LOG_PREFIX) -> str:
    """Move ``key`` aside (bytes unchanged) with the reason beside it; returns where it went.

    The copy is written before the original is deleted: a crash in between leaves the part
    in both places, and the next reader quarantines it again (same key, same bytes)."""
    rest = key[len(prefix) + 1 :] if key.startswith(prefix + "/") else key
    dest = f"{quarantine_prefix(prefix)}/{rest}"
    try:
        data = store.get_bytes(key)
    except Exception:
        if store.exists(key):  # the store failed (down, no access): say so, move nothing
            raise
        return dest  # gone already (another reader moved it): nothing to move
    store.put_bytes(dest, data)
    date = _partition_date(rest.split("/", 1)[0]) if "/" in rest else None
    record = {
        "key": key,
        "quarantined_as": dest,
        "reason": reason,
        "date": date.isoformat() if date else None,
        "bytes": len(data),
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "fix": f"repair or rewrite the part, then move it back to {key} (or delete both files)",
    }
    store.put_text(dest + ".reason.json", json.dumps(record, indent=2))
    store.delete(key)
    print(f"inference log: quarantined {key}: {reason} (now at {dest})", file=sys.stderr)
    return dest


def quarantined(
    store: Storage,
    prefix: str = LOG_PREFIX,
    since: dt.date | None = None,
    until: dt.date | None = None,
) -> list[dict]:
    """The quarantine records (optionally of the partitions ``since <= date <= until``;
    a part whose folder named no date is in every window)."""
    out = []
    for key in store.keys(quarantine_prefix(prefix) + "/"):
        if not key.endswith(".reason.json"):
            continue
        try:
            rec = json.loads(store.get_text(key))
        except Exception:  # a broken record still says a part was moved
            rec = {"key": key.removesuffix(".reason.json"), "reason": "unreadable record"}
        d = rec.get("date")
        if d and since and d < since.isoformat():
            continue
        if d and until and d > until.isoformat():
            continue
        out.append(rec)
    return sorted(out, key=lambda r: (r.get("date") or "", r.get("key") or ""))


def lost_parts(
    store: Storage, since: dt.date, until: dt.date, found_from: str = "", found_to: str = "~"
) -> list[dict]:
    """The quarantine records of the log and the shadow log for the partitions ``since`` ..
    ``until``, and of parts that named no date, when they were found (``at``, ISO) between
    ``found_from`` and ``found_to``: what a window's reader was judged without."""
    return [r for pre in (LOG_PREFIX, SHADOW_PREFIX) for r in quarantined(store, pre, since, until)
            if r.get("date") or found_from <= (r.get("at") or "") <= found_to]  # fmt: skip


def log_parts(store: Storage, prefix: str = LOG_PREFIX) -> dict[dt.date, list[str]]:
    """The parts of the log by date partition (one listing), oldest first. Parts in a
    folder that is not ``date=YYYY-MM-DD`` are quarantined on the way."""
    parts: dict[dt.date, list[str]] = {}
    for key in store.keys(prefix + "/"):
        folder, _, name = key[len(prefix) + 1 :].partition("/")
        if not name or not key.endswith(".parquet"):
            continue  # a file beside the partitions, or not a part (a writer's temp file)
        day = _partition_date(folder)
        if day is None or "/" in name:
            quarantine_part(store, key, f"not in a date=YYYY-MM-DD partition ({folder!r})",
                            prefix)  # fmt: skip
            continue
        parts.setdefault(day, []).append(key)
    return dict(sorted(parts.items()))


def log_dates(store: Storage, prefix: str = LOG_PREFIX) -> list[dt.date]:
    """The date partitions of the log, oldest first (:func:`log_parts`)."""
    return list(log_parts(store, prefix))


def _read_part(store: Storage, key: str, day: dt.date, need: list[str], schema: pa.Schema,
               prefix: str):  # fmt: skip
    """One part as a table of ``need`` cast to ``schema``, or None when it was quarantined
    (the reason says why: unreadable, not the schema, rows of another day)."""
    try:
        data = store.get_bytes(key)
    except Exception:
        if store.exists(key):  # the store failed (down, no access): an error, not a gap
            raise
        return None  # moved or deleted between the listing and the read
    try:
        if not data:
            raise ValueError("zero bytes")
        table = read_parquet(data, columns=need).cast(schema)
    except Exception as exc:  # pyarrow raises many kinds; the part is bad
        why = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        quarantine_part(store, key, f"unreadable as {SCHEMA_VERSION}: {why}", prefix)
        return None
    if table.num_rows:
        ts = table.column("ts")
        lo = pa.scalar(_utc(day), ts.type)
        hi = pa.scalar(_utc(day + dt.timedelta(days=1)), ts.type)
        outside = pc.sum(
            pc.invert(pc.and_(pc.greater_equal(ts, lo), pc.less(ts, hi))).cast(pa.int64())
        )
        n_out = outside.as_py() or 0
        if n_out or ts.null_count:
            quarantine_part(
                store, key,
                f"{n_out + ts.null_count} of {table.num_rows} rows have a ts outside "
                f"date={day.isoformat()} (or none): a writer's clock, or a misplaced file",
                prefix,
            )  # fmt: skip
            return None
    return table


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

    Only the date partitions of the window are listed and read (a window of more than
    ``_LIST_ONCE_DAYS`` days: the partitions that exist, from one listing). A bad part is
    quarantined and left out (module docstring); the read goes on.
    """
    t0, t1 = _utc(start), _utc(end)
    cols = list(columns) if columns else SCHEMA.names
    need = list(dict.fromkeys([*cols, "ts", "camera", "model_version", "frame_key"]))
    schema = pa.schema([SCHEMA.field(n) for n in need], metadata=SCHEMA.metadata)
    if t1 - t0 > dt.timedelta(days=_LIST_ONCE_DAYS):
        first, last = t0.date(), (t1 - dt.timedelta(milliseconds=1)).date()
        keys = [(d, k) for d, ks in log_parts(store, prefix).items() if first <= d <= last
                for k in ks]  # fmt: skip
    else:
        keys = [(day, k) for day in _dates(t0, t1)
                for k in store.keys(f"{prefix}/date={day.isoformat()}/")
                if k.endswith(".parquet") and k.count("/") == 2]  # fmt: skip
    parts = []
    for day, key in keys:
        table = _read_part(store, key, day, need, schema, prefix)
        if table is not None:
            parts.append(table)
    if not parts:
        return schema.empty_table().select(cols)
    table = pa.concat_tables(parts)
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

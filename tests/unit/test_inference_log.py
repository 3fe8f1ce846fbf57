"""The inference-log contract: schema round-trip, date partitions, windows, idempotent parts."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from cvloop.adapters.inference_log import (
    SCHEMA,
    SCHEMA_VERSION,
    Detection,
    FrameRecord,
    LogSchemaError,
    detections_per_frame,
    flatten_detections,
    read_log,
    to_table,
    write_log,
)
from cvloop.adapters.storage import LocalStorage

T0 = dt.datetime(2026, 10, 5, 23, 59, 0, tzinfo=dt.UTC)


def _records(n=4, version="1", start=T0, cam="cam-01"):
    out = []
    for i in range(n):
        dets = [Detection("crate", 0.9 - 0.1 * j, 0.5, 0.5, 0.1, 0.2) for j in range(i % 3)]
        out.append(
            FrameRecord(
                start + dt.timedelta(seconds=30 * i),
                cam,
                f"frames/{cam}/x/{i}.jpg",
                version,
                12.5 + i,
                dets,
            )
        )
    return out


@pytest.fixture()
def store(tmp_path):
    return LocalStorage(tmp_path)


def test_roundtrip_keeps_schema_and_values(store):
    recs = _records()
    keys = write_log(store, recs)
    # rows straddle midnight: one part per UTC date
    assert [k.split("/")[1] for k in keys] == ["date=2026-10-05", "date=2026-10-06"]
    table = read_log(store, dt.date(2026, 10, 5), dt.date(2026, 10, 7))
    assert table.schema.equals(SCHEMA, check_metadata=False)
    assert table.schema.metadata[b"cvloop.schema"] == SCHEMA_VERSION.encode()
    assert table.num_rows == 4
    assert table.column("frame_key").to_pylist() == [r.frame_key for r in recs]
    assert detections_per_frame(table).to_pylist() == [0, 1, 2, 0]
    det = table.column("detections")[2].as_py()[1]
    assert det["label"] == "crate" and det["conf"] == pytest.approx(0.8)
    assert table.column("ts")[0].as_py() == T0


def test_window_and_filters(store):
    write_log(store, _records(version="1"), part="a")
    write_log(store, _records(version="2", cam="cam-02"), part="b")
    day = read_log(store, T0, T0 + dt.timedelta(seconds=61))
    assert day.num_rows == 6  # 3 rows of each part fall in [T0, T0 + 61 s)
    only = read_log(store, dt.date(2026, 10, 5), dt.date(2026, 10, 7), model_versions=["2"])
    assert set(only.column("model_version").to_pylist()) == {"2"}
    cam = read_log(store, dt.date(2026, 10, 5), dt.date(2026, 10, 7), cameras=["cam-01"])
    assert set(cam.column("camera").to_pylist()) == {"cam-01"}
    assert read_log(store, dt.date(2026, 1, 1), dt.date(2026, 1, 2)).num_rows == 0


def test_writing_the_same_batch_again_does_not_duplicate(store):
    write_log(store, _records())
    write_log(store, _records())
    assert read_log(store, dt.date(2026, 10, 5), dt.date(2026, 10, 7)).num_rows == 4
    write_log(store, _records(), part="serve-cam-01")
    write_log(store, _records(), part="serve-cam-01")
    assert read_log(store, dt.date(2026, 10, 5), dt.date(2026, 10, 7)).num_rows == 8


def test_flatten_detections_keeps_frame_context(store):
    flat = flatten_detections(to_table(_records(6)))
    assert flat.num_rows == sum(i % 3 for i in range(6))
    assert {"ts", "camera", "model_version", "label", "conf", "w", "h"} <= set(flat.column_names)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (FrameRecord(dt.datetime(2026, 1, 1), "c", "k", "1", 1.0), "timezone-aware"),
        (
            FrameRecord(T0, "c", "k", "1", 1.0, [Detection("a", 1.5, 0.5, 0.5, 0.1, 0.1)]),
            "confidence 1.5",
        ),
        (
            FrameRecord(T0, "c", "k", "1", 1.0, [Detection("a", 0.5, 50, 50, 10, 10)]),
            "not normalized",
        ),
    ],
)
def test_bad_records_are_refused(store, record, message):
    with pytest.raises(LogSchemaError, match=message):
        write_log(store, [record])


def test_table_missing_columns_is_refused(store):
    with pytest.raises(LogSchemaError, match="lacks columns"):
        write_log(store, pa.table({"ts": [T0]}))

"""The retrain flow's first steps against the real stack: collect the window's frames,
prefilter them with the registered champion (ONNX Runtime), select within the budget."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq

from cvloop.storage import LocalStorage


def test_collect_prefilter_select(booted):
    b = booted
    b.stack.cli(
        "fleet",
        "generate",
        "--start",
        "2026-09-01",
        "--days",
        "2",
        "--cameras",
        "2",
        "--bursts-per-day",
        "6",
        "--frames-per-burst",
        "3",
        "-s",
        "night@2026-09-02:cam-02",
        env=b.env,
    )
    store = LocalStorage(b.work / "store")
    store.put_bytes("frames/cam-01/2026-09-01/1756684800123.jpg", b"\xff\xd8broken")
    out = b.stack.cli(
        "retrain",
        "--window-end",
        "2026-09-03",
        "--days",
        "2",
        "--camera",
        "cam-02",
        env=b.env,
        timeout=600,
    ).stdout
    summary = json.loads(out[out.index("{") :])
    assert summary["quarantined"] == 1
    assert summary["collected"] + summary["near_duplicates_dropped"] == 2 * 2 * 6 * 3
    assert 0 < summary["selected"] <= summary["after_prefilter"] <= summary["collected"]
    runs = [k for k in store.keys("runs/retrain/") if k.endswith("selected.parquet")]
    assert runs
    selected = pq.read_table(io.BytesIO(store.get_bytes(runs[-1]))).to_pylist()
    assert len(selected) == summary["selected"]
    assert all(row["why"] for row in selected)
    assert any("drift:camera cam-02" in row["why"] for row in selected)
    assert all(row["key"].startswith("frames/cam-0") for row in selected)
    quarantine = json.loads(store.get_text(runs[-1].replace("selected.parquet", "quarantine.json")))
    assert quarantine[0]["reason"] == "truncated JPEG (no end-of-image marker)"

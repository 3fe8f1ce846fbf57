"""Daily rollups: histograms equal the log's values, merge across days, rebuild only when
the log of a day changed."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from cvloop.adapters.inference_log import (
    Detection,
    FrameRecord,
    flatten_detections,
    read_log,
    write_log,
)
from cvloop.adapters.rollups import build_rollup, histogram, load_rollups
from cvloop.adapters.storage import LocalStorage
from cvloop.core.drift import binned_stats, exact_stats, signal_bins

DAY = dt.date(2026, 10, 5)


def _log(store, day, cam, n, conf_shift=0.0, seed=0, version="1"):
    rng = np.random.default_rng(seed)
    recs = []
    t0 = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    for i in range(n):
        k = int(rng.poisson(2.0))
        dets = [
            Detection(
                ["crate", "barrel", "cone"][int(rng.integers(0, 3))],
                float(np.clip(rng.beta(6, 2) - conf_shift, 0, 1)),
                0.5,
                0.5,
                float(rng.uniform(0.02, 0.3)),
                float(rng.uniform(0.02, 0.3)),
            )
            for _ in range(k)
        ]
        recs.append(
            FrameRecord(
                t0 + dt.timedelta(seconds=60 * i),
                cam,
                f"frames/{cam}/{day}/{i}.jpg",
                version,
                5.0,
                dets,
            )
        )
    write_log(store, recs, part=f"serve-{cam}")


@pytest.fixture()
def store(tmp_path):
    s = LocalStorage(tmp_path)
    for d in range(3):
        for cam, shift in (("cam-01", 0.15 if d == 2 else 0.0), ("cam-02", 0.0)):
            _log(s, DAY + dt.timedelta(days=d), cam, 400, shift, seed=d * 10 + len(cam))
    return s


def test_histograms_count_exactly_what_the_log_holds(store):
    assert build_rollup(store, DAY)
    r = load_rollups(store, DAY, DAY + dt.timedelta(days=1))
    bins = signal_bins()
    log = read_log(store, DAY, DAY + dt.timedelta(days=1), cameras=["cam-01"])
    flat = flatten_detections(log)
    conf = histogram(r, "confidence", 200, camera="cam-01", label="*")
    assert np.array_equal(conf, bins["confidence"].counts(flat["conf"].to_numpy()))
    crate = histogram(r, "confidence", 200, camera="cam-01", label="crate")
    assert crate.sum() == sum(1 for x in flat["label"].to_pylist() if x == "crate")
    vol = histogram(r, "volume", 101, camera="cam-01", label="*")
    assert vol.sum() == log.num_rows  # one value per frame, zeros included


def test_unchanged_days_are_reused_and_changed_days_rebuilt(store):
    assert build_rollup(store, DAY)
    assert not build_rollup(store, DAY)
    _log(store, DAY, "cam-03", 10)  # a new part arrives for that day
    assert build_rollup(store, DAY)
    r = load_rollups(store, DAY, DAY + dt.timedelta(days=1))
    assert "cam-03" in set(r.column("camera").to_pylist())


def test_week_from_rollups_matches_exact_within_tolerance(store):
    for d in range(3):
        build_rollup(store, DAY + dt.timedelta(days=d))
    r = load_rollups(store, DAY, DAY + dt.timedelta(days=3))
    bins = signal_bins()["confidence"]
    import pyarrow as pa
    import pyarrow.compute as pc

    def days(a, b):
        return r.filter(
            pc.and_(pc.greater_equal(r["date"], pa.scalar(a)), pc.less(r["date"], pa.scalar(b)))
        )

    ref_r, cur_r = (
        days(DAY, DAY + dt.timedelta(days=2)),
        days(DAY + dt.timedelta(days=2), DAY + dt.timedelta(days=3)),
    )
    for cam, drifted in (("cam-01", True), ("cam-02", False)):
        binned = binned_stats(
            histogram(ref_r, "confidence", 200, camera=cam),
            histogram(cur_r, "confidence", 200, camera=cam),
            bins,
        )
        ref = flatten_detections(read_log(store, DAY, DAY + dt.timedelta(days=2), cameras=[cam]))
        cur = flatten_detections(
            read_log(store, DAY + dt.timedelta(days=2), DAY + dt.timedelta(days=3), cameras=[cam])
        )
        exact = exact_stats(ref["conf"].to_numpy(), cur["conf"].to_numpy())
        assert abs(binned.ks_stat - exact.ks_stat) < 0.01
        assert (binned.ks_p < 0.01) == (exact.ks_p < 0.01) == drifted

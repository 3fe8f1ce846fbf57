"""The weekly check on a synthetic log: two cameras turn dark (fewer, less confident
detections); the check flags them, and only them, on both paths; the rules explain
themselves."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from cvloop.adapters.inference_log import Detection, FrameRecord, write_log
from cvloop.adapters.parquet import read_parquet
from cvloop.adapters.storage import LocalStorage
from cvloop.config.params import TriggerParams
from cvloop.core.signals import most_drifted, windows
from cvloop.core.triggers import (
    days_since_training,
    drift_slices,
    holdout_map_drop,
    ks_with_ap_regression,
    new_labels,
    severe_drift,
)
from cvloop.stages.signals import compute_drift, drift_exact, drift_rollups

END = dt.date(2026, 11, 16)
CLASSES = ["crate", "barrel", "cone"]
DRIFTED = {"cam-01", "cam-02"}


def _fill(store, days=14, frames_per_day=60):
    rng = np.random.default_rng(0)
    start = END - dt.timedelta(days=days)
    for d in range(days):
        day = start + dt.timedelta(days=d)
        night = d >= days // 2
        for cam in ("cam-01", "cam-02", "cam-03", "cam-04", "cam-05"):
            dark = night and cam in DRIFTED
            recs = []
            t0 = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
            for i in range(frames_per_day):
                k = int(rng.poisson(0.6 if dark else 2.5))
                dets = [
                    Detection(
                        CLASSES[int(rng.integers(0, 3))],
                        float(np.clip(rng.beta(3, 3) if dark else rng.beta(8, 2), 0, 1)),
                        0.5,
                        0.5,
                        float(rng.uniform(0.05, 0.2)),
                        float(rng.uniform(0.05, 0.2)),
                    )
                    for _ in range(k)
                ]
                recs.append(
                    FrameRecord(
                        t0 + dt.timedelta(minutes=20 * i),
                        cam,
                        f"frames/{cam}/{day}/{i}.jpg",
                        "1",
                        5.0,
                        dets,
                    )
                )
            write_log(store, recs, part=f"serve-{cam}")
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return _fill(LocalStorage(tmp_path_factory.mktemp("log")))


@pytest.mark.parametrize("path", ["exact", "rollup"])
def test_drifted_cameras_are_flagged_and_clean_ones_are_not(store, path):
    ref, cur = windows(END, 7, 7)
    fn = drift_exact if path == "exact" else drift_rollups
    rows = fn(store, ref, cur, CLASSES, 200)
    assert {r.path for r in rows} == {path}
    result = severe_drift(rows, TriggerParams())
    assert result.fired
    flagged_cams = {s["name"] for s in drift_slices([result]) if s["kind"] == "camera"}
    assert flagged_cams == DRIFTED
    top = most_drifted(rows, 3)
    assert {r.name for r in top} <= DRIFTED | {"*"}


def test_exact_and_rollup_paths_agree(store):
    ref, cur = windows(END, 7, 7)
    exact = {
        (r.signal, r.kind, r.name): r.stats for r in drift_exact(store, ref, cur, CLASSES, 200)
    }
    binned = {
        (r.signal, r.kind, r.name): r.stats for r in drift_rollups(store, ref, cur, CLASSES, 200)
    }
    assert exact.keys() == binned.keys()
    for key, e in exact.items():
        b = binned[key]
        assert e.enough_data == b.enough_data, key
        if e.enough_data:
            assert abs(e.ks_stat - b.ks_stat) < 0.02, key
            assert (e.ks_p < 0.01) == (b.ks_p < 0.01) or min(e.ks_p, b.ks_p) > 1e-3, key


def test_compute_drift_chooses_the_rollup_path_for_big_windows(store):
    ref, cur = windows(END, 7, 7)
    assert {r.path for r in compute_drift(store, ref, cur, CLASSES, 200, 10**9)} == {"exact"}
    assert {r.path for r in compute_drift(store, ref, cur, CLASSES, 200, 10)} == {"rollup"}


def test_small_slices_are_not_enough_data_never_alarms(store):
    ref, cur = windows(END, 7, 7)
    rows = drift_exact(store, ref, cur, CLASSES, min_samples=10**6)
    assert all(not r.stats.enough_data for r in rows)
    assert not severe_drift(rows, TriggerParams()).fired


def test_holdout_map_drop_needs_consecutive_weeks():
    p = TriggerParams()
    hist = [(202640, 0.80), (202641, 0.785), (202642, 0.78), (202643, 0.779)]
    r = holdout_map_drop(hist, 0.80, p)
    assert r.fired and "3 week(s) in a row" in r.value
    r = holdout_map_drop([*hist[:-1], (202643, 0.80)], 0.80, p)
    assert not r.fired
    assert not holdout_map_drop([], 0.8, p).fired


def test_ks_needs_an_ap_regression_too(store):
    ref, cur = windows(END, 7, 7)
    rows = drift_exact(store, ref, cur, CLASSES, 200)
    p = TriggerParams()
    same = {"crate": 0.8, "barrel": 0.8, "cone": 0.8}
    assert not ks_with_ap_regression(rows, same, same, p).fired
    worse = {**same, "cone": 0.7}
    r = ks_with_ap_regression(rows, worse, same, p)
    assert r.fired and "cone 10.0 pt" in r.value


def test_operational_rules_explain_missing_inputs():
    p = TriggerParams()
    assert new_labels(None, p).explanation == "Label Studio not reachable"
    assert new_labels(1500, p).fired
    assert days_since_training(91, p).fired and not days_since_training(3, p).fired


def test_windows_default_and_fixed_reference():
    ref, cur = windows(dt.date(2026, 11, 16), 7, 7)
    assert (cur.start.date(), cur.end.date()) == (dt.date(2026, 11, 9), dt.date(2026, 11, 16))
    assert (ref.start.date(), ref.end.date()) == (dt.date(2026, 11, 2), dt.date(2026, 11, 9))
    ref, _ = windows(dt.date(2026, 11, 16), 7, 14, dt.date(2026, 10, 1))
    assert (ref.start.date(), ref.end.date()) == (dt.date(2026, 10, 1), dt.date(2026, 10, 15))
    assert len(cur.days) == 7 and cur.label() == "2026-11-09..2026-11-15"


def test_rollup_bins_follow_the_monitor_params(tmp_path):

    from cvloop.adapters.rollups import rollup_key
    from cvloop.core.drift import signal_bins

    store = _fill(LocalStorage(tmp_path), days=4, frames_per_day=20)
    ref, cur = windows(END, 2, 2)
    coarse = signal_bins(20, 30, 10)
    rows = compute_drift(store, ref, cur, CLASSES, 10, 0, coarse)
    assert {r.path for r in rows} == {"rollup"}
    day = cur.days[0]
    table = read_parquet(store.get_bytes(rollup_key(day)))
    lengths = {
        s: len(c)
        for s, c in zip(table["signal"].to_pylist(), table["counts"].to_pylist(), strict=True)
    }
    assert lengths == {"confidence": 20, "size": 30, "volume": 11}
    compute_drift(store, ref, cur, CLASSES, 10, 0)  # the default bins: the day is rebuilt
    table = read_parquet(store.get_bytes(rollup_key(day)))
    assert len(table["counts"][0].as_py()) in (200, 101)


def test_new_labels_count_the_review_queues_not_the_holdout_refresh():
    from types import SimpleNamespace

    from cvloop.adapters.labelstudio import labels_for_training

    since = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    after, before = since + dt.timedelta(days=3), since - dt.timedelta(days=3)

    def project(title, n, created):
        return SimpleNamespace(title=title, num_tasks_with_annotations=n, created_at=created)

    projects = [
        project("dock dataset-v3", 400, after),  # a review queue: training data
        project("dock dataset-v4", 250, after),
        project("dock holdout-v5", 300, after),  # the quarterly refresh: never trained on
        project("dock dataset-v2", 600, before),  # the champion was trained on these
        project("someone else's project", 900, after),
        project("yard dataset-v3", 800, after),  # another detector's queue on the same server
        project("dock-2 dataset-v3", 700, after),  # a model whose name starts like this one's
    ]
    assert labels_for_training(projects, since, "dock") == 650
    # projects named before titles carried the model belong to the default model
    legacy = [project("cvloop dataset-v3", 40, after), project("cvloop-detector dataset-v4", 2,
                                                                 after)]  # fmt: skip
    assert labels_for_training(legacy, since, "cvloop-detector") == 42
    assert labels_for_training(legacy, since, "dock") == 0

"""``cvloop bench drift``: drift statistics — cvloop vs Evidently vs scipy, and fleet scale.

Cases:

* ``drift.exact_1M.seconds`` (baseline Evidently ``ValueDrift`` ks/psi/wasserstein) and
  ``drift.exact_1M.vs_scipy`` (baseline plain scipy/numpy): the three statistics on the
  three signals, 1M detections per window (volume over 400k frames per window).
* ``drift.agreement.max_abs_diff_vs_evidently`` / ``..._vs_scipy``: the largest difference
  between cvloop's values and theirs (baseline: the 1e-9 tolerance).
* ``drift.rollup_build.detections_per_s``: building a day's rollup from its Parquet log
  (baseline: reading that log and computing the exact statistics of one slice).
* ``drift.fleet.binning_detections_per_s``, ``drift.fleet.rss_mb_after_7_days``,
  ``drift.fleet.week_check_seconds``: a 1,000-camera week of 10^8 detections rolled up
  in daily chunks (bounded memory), then the weekly check of every slice (overall, per
  class, per camera x 3 signals) from the rollups (baseline: the exact path on the raw
  week's overall slice).

* ``drift.alarms.clean_slice_share`` (baseline: Evidently's default PSI > 0.1 on the same
  slices) and ``drift.alarms.drifted_cameras_caught`` (baseline: the drifted cameras): a
  fleet of 300 cameras whose slices range from a few dozen to a few thousand detections a
  week, two clean weeks but for 10 "night" cameras (confidence down, boxes smaller); the
  share of clean camera / class slices that ``severe_drift`` flags (goal <= 1 %), and the
  share of night cameras it still catches (goal: all). A slice under 200 detections a week
  is "not enough data": reported, never an alarm.

``--quick`` divides the sizes by 10.
"""

from __future__ import annotations

import gc
import tempfile
from collections.abc import Iterator

import numpy as np

from cvloop.app.bench import Case, timed
from cvloop.core.drift import binned_stats_many, exact_stats, psi_evidently, signal_bins

CLASSES = ("crate", "barrel", "cone")


def _windows(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    frames = int(n / 2.5)
    ref = {
        "confidence": rng.beta(6, 2, n),
        "size": rng.lognormal(-4, 1, n),
        "volume": rng.poisson(2.5, frames).astype(np.float64),
    }
    cur = {
        "confidence": np.clip(rng.beta(6, 2, n) - 0.01, 0, 1),
        "size": rng.lognormal(-3.95, 1, n),
        "volume": rng.poisson(2.6, frames).astype(np.float64),
    }
    return ref, cur


def _cvloop(ref, cur):
    return {s: exact_stats(ref[s], cur[s]) for s in ref}


def _scipy(ref, cur):
    from scipy import stats

    out = {}
    for s in ref:
        ks = stats.ks_2samp(ref[s], cur[s])
        w = stats.wasserstein_distance(ref[s], cur[s]) / max(float(np.std(ref[s])), 0.001)
        psi = psi_evidently(np.sort(ref[s]), np.sort(cur[s]))
        out[s] = (float(ks.statistic), float(ks.pvalue), psi, w)
    return out


def _evidently(ref, cur):
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    out: dict[str, dict[str, float]] = {}
    for cols in (["confidence", "size"], ["volume"]):
        dd = DataDefinition(numerical_columns=cols)
        rdf = pd.DataFrame({c: ref[c] for c in cols})
        cdf = pd.DataFrame({c: cur[c] for c in cols})
        report = Report(
            [ValueDrift(column=c, method=m) for c in cols for m in ("ks", "psi", "wasserstein")]
        )
        snap = report.run(
            current_data=Dataset.from_pandas(cdf, data_definition=dd),
            reference_data=Dataset.from_pandas(rdf, data_definition=dd),
        )
        for m in snap.dict()["metrics"]:
            col, method = m["config"]["column"], m["config"]["method"]
            out.setdefault(col, {})[method] = float(m["value"])
    return out


def run(quick: bool = False) -> Iterator[Case]:
    n = 100_000 if quick else 1_000_000
    label = "100k" if quick else "1M"
    w = _windows(n)
    import evidently  # noqa: F401  (import time is not part of the measurement)

    t_cv, ours = timed(lambda w=w: _cvloop(*w), repeat=3)
    t_sp, sp = timed(lambda w=w: _scipy(*w), repeat=1)
    t_ev, ev = timed(lambda w=w: _evidently(*w), repeat=1)
    yield Case(
        f"drift.exact_{label}.seconds",
        round(t_cv, 4),
        "s",
        "evidently ValueDrift ks+psi+wasserstein, 3 signals",
        round(t_ev, 4),
    )
    yield Case(
        f"drift.exact_{label}.vs_scipy",
        round(t_cv, 4),
        "s",
        "scipy ks_2samp + wasserstein_distance + numpy PSI",
        round(t_sp, 4),
    )
    diff_ev = max(
        max(
            abs(ours[s].ks_p - ev[s]["ks"]),
            abs(ours[s].psi - ev[s]["psi"]),
            abs(ours[s].wasserstein - ev[s]["wasserstein"]),
        )
        for s in ours
    )
    diff_sp = max(
        max(
            abs(ours[s].ks_stat - sp[s][0]),
            abs(ours[s].ks_p - sp[s][1]),
            abs(ours[s].psi - sp[s][2]),
            abs(ours[s].wasserstein - sp[s][3]),
        )
        for s in ours
    )
    yield Case(
        "drift.agreement.max_abs_diff_vs_evidently", float(diff_ev), "abs", "tolerance", 1e-9
    )
    yield Case("drift.agreement.max_abs_diff_vs_scipy", float(diff_sp), "abs", "tolerance", 1e-9)
    del w
    gc.collect()
    yield _rollup_build_case(n)
    yield from _fleet_cases(10_000_000 if quick else 100_000_000)
    yield from _alarm_cases(seeds=2 if quick else 5)


def _alarm_cases(seeds: int, cams: int = 300, night: int = 10) -> Iterator[Case]:
    """How often the severe_drift rule alarms on slices that did not change, by slice size.

    Every camera has its own confidence and box-size distributions and its own volume
    (lognormal: a few dozen to a few thousand detections a week, split over the classes);
    the current week is drawn from the same distributions as the reference, except for the
    first ``night`` cameras (confidence -0.15, boxes x0.7). Slices: per camera and per class,
    confidence and size (the exact path, as a small fleet's weekly check runs)."""
    from cvloop.config.params import TriggerParams
    from cvloop.core.signals import SliceDrift
    from cvloop.core.triggers import severe_drift

    tp = TriggerParams()
    clean = flagged = psi_flagged = caught = psi_caught = drifted = 0
    for seed in range(seeds):
        rng = np.random.default_rng([7, seed])
        rows: list[SliceDrift] = []
        vols = np.clip(rng.lognormal(6.0, 1.2, cams), 30, 20_000).astype(int)
        a, b = rng.uniform(3, 8, cams), rng.uniform(1.5, 3, cams)
        mu = rng.uniform(-4.5, -3.0, cams)
        per_class: dict[str, dict[str, list]] = {c: {"ref": [], "cur": []} for c in CLASSES}
        for c in range(cams):
            week = {}
            for side in ("ref", "cur"):
                n = int(vols[c] * rng.uniform(0.9, 1.1))
                conf = rng.beta(a[c], b[c], n)
                size = rng.lognormal(mu[c], 0.8, n)
                if side == "cur" and c < night:
                    conf, size = np.clip(conf - 0.15, 0.01, 1), size * 0.7
                cls = rng.integers(0, len(CLASSES), n)
                week[side] = (conf, size, cls)
                for k, name in enumerate(CLASSES):
                    per_class[name][side].append((conf[cls == k], size[cls == k], c < night))
            for s, i in (("confidence", 0), ("size", 1)):
                st = exact_stats(week["ref"][i], week["cur"][i])
                rows.append(SliceDrift(s, "camera", f"cam-{c:03d}", st, "exact"))
        for name, sides in per_class.items():  # a class slice without the night cameras
            for s, i in (("confidence", 0), ("size", 1)):
                ref = np.concatenate([x[i] for x in sides["ref"] if not x[2]])
                cur = np.concatenate([x[i] for x in sides["cur"] if not x[2]])
                rows.append(SliceDrift(s, "class", name, exact_stats(ref, cur), "exact"))
        hits = {(h["kind"], h["name"]) for h in severe_drift(rows, tp).slices}
        judged = {(r.kind, r.name) for r in rows if r.stats.enough_data}
        psi = {(r.kind, r.name) for r in rows if r.stats.enough_data and r.stats.psi > 0.1}
        nights = {("camera", f"cam-{c:03d}") for c in range(night)} & judged
        clean += len(judged - nights)
        flagged += len((hits & judged) - nights)
        psi_flagged += len(psi - nights)
        caught += len(hits & nights)
        psi_caught += len(psi & nights)
        drifted += len(nights)
    yield Case(
        "drift.alarms.clean_slice_share",
        round(flagged / max(clean, 1), 4),
        "share",
        f"Evidently's default PSI > 0.1 on the same {clean} clean slices ({seeds} fleets)",
        round(psi_flagged / max(clean, 1), 4),
    )
    yield Case(
        "drift.alarms.drifted_cameras_caught",
        round(caught / max(drifted, 1), 4),
        "share",
        f"all {drifted} night cameras with enough data (PSI > 0.1 caught {psi_caught})",
        1.0,
    )


def _rollup_build_case(n: int) -> Case:
    """End to end from Parquet: one day's log of ``n`` detections -> its rollup."""
    import datetime as dt

    import pyarrow as pa

    from cvloop.adapters.inference_log import (
        DETECTION_TYPE,
        SCHEMA,
        flatten_detections,
        read_log,
        write_log,
    )
    from cvloop.adapters.rollups import build_rollup
    from cvloop.adapters.storage import LocalStorage

    rng = np.random.default_rng(1)
    frames = int(n / 2.5)
    counts = rng.poisson(2.5, frames)
    total = int(counts.sum())
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    day = dt.date(2026, 11, 2)
    t0 = int(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp() * 1000)
    structs = pa.StructArray.from_arrays(
        [
            pa.array(np.asarray(CLASSES)[rng.integers(0, 3, total)]),
            pa.array(rng.beta(6, 2, total).astype(np.float32)),
            pa.array(rng.random(total, dtype=np.float32)),
            pa.array(rng.random(total, dtype=np.float32)),
            pa.array((rng.random(total) * 0.3).astype(np.float32)),
            pa.array((rng.random(total) * 0.3).astype(np.float32)),
        ],
        fields=list(DETECTION_TYPE),
    )
    cams = np.char.add("cam-", (np.arange(frames) % 100).astype(str))
    table = pa.table(
        {
            "ts": pa.array(
                t0 + (np.arange(frames) * 86_400_000 // frames), pa.timestamp("ms", tz="UTC")
            ),
            "camera": pa.array(cams),
            "camera_group": pa.array(["default"] * frames),
            "frame_key": pa.array(np.char.add("frames/x/", np.arange(frames).astype(str))),
            "model_version": pa.array(["1"] * frames),
            "latency_ms": pa.array(np.full(frames, 5.0, np.float32)),
            "error": pa.nulls(frames, pa.string()),
            "detections": pa.ListArray.from_arrays(pa.array(offsets), structs),
        },
        schema=SCHEMA,
    )
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStorage(tmp)
        write_log(store, table, part="bench")
        t_roll, _ = timed(lambda: build_rollup(store, day, force=True))

        def exact_one_slice():
            log = read_log(store, day, day + dt.timedelta(days=1))
            flat = flatten_detections(log)
            conf = flat["conf"].to_numpy()
            return exact_stats(conf[: len(conf) // 2], conf[len(conf) // 2 :])

        t_exact, _ = timed(exact_one_slice)
    return Case(
        "drift.rollup_build.detections_per_s",
        round(total / t_roll),
        "detections/s",
        "read the day's log + exact stats of one slice",
        round(total / t_exact),
    )


def _fleet_day(d: int, per_day: int, cams: int, drift_day: int):
    """One day of a fleet's detections (deterministic per day)."""
    rng = np.random.default_rng([2, d])
    cam = rng.integers(0, cams, per_day, dtype=np.int32)
    cls = rng.integers(0, len(CLASSES), per_day, dtype=np.int8)
    conf = rng.beta(6, 2, per_day).astype(np.float32)
    if d == drift_day:
        conf[cam < 20] = np.clip(conf[cam < 20] - 0.1, 0, 1)  # 20 cameras drift
    size = rng.lognormal(-4, 1, per_day).astype(np.float32)
    vol = rng.poisson(2.5, int(per_day / 2.5)).astype(np.float32)
    vol_cam = rng.integers(0, cams, len(vol), dtype=np.int32)
    return cam, cls, conf, size, vol, vol_cam


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _fleet_cases(total: int) -> Iterator[Case]:
    """1,000 cameras x 7 days, ``total`` detections, binned day by day (bounded memory)."""
    import time as _t

    bins = signal_bins()
    cams, days = 1000, 7
    k = len(CLASSES)
    groups = cams * k
    nb = {s: len(b.edges) - 1 for s, b in bins.items()}
    week = {s: np.zeros((days, groups, nb[s]), dtype=np.int64) for s in ("confidence", "size")}
    volume = np.zeros((days, cams, nb["volume"]), dtype=np.int64)
    per_day = total // days
    t_bin = 0.0
    rss = []
    for d in range(days):
        cam, cls, conf, size, vol, vol_cam = _fleet_day(d, per_day, cams, days - 1)
        t = _t.perf_counter()
        gid = cam.astype(np.int64) * k + cls
        for s, values in (("confidence", conf), ("size", size)):
            idx = gid * nb[s] + bins[s].index(values)
            week[s][d] += np.bincount(idx, minlength=groups * nb[s]).reshape(groups, nb[s])
            del idx
        vidx = vol_cam.astype(np.int64) * nb["volume"] + bins["volume"].index(vol)
        volume[d] += np.bincount(vidx, minlength=cams * nb["volume"]).reshape(cams, nb["volume"])
        t_bin += _t.perf_counter() - t
        rss.append(_rss_mb())
        del cam, cls, conf, size, vol, vol_cam, gid, vidx
        gc.collect()
    yield Case(
        "drift.fleet.binning_detections_per_s",
        round(total / t_bin),
        "detections/s",
        "np.sort of the same values (the exact path's core), detections/s",
        round(_sort_rate(per_day)),
    )
    yield Case(
        "drift.fleet.rss_mb_after_7_days",
        round(max(rss)),
        "MB",
        "RSS after the first day's chunk",
        round(rss[0]),
    )
    # the weekly check from rollups: reference = days 0-5, current = day 6
    t = _t.perf_counter()
    n_slices = 0
    for s in ("confidence", "size"):
        ref = week[s][:6].sum(axis=0).reshape(cams, k, -1)
        cur = week[s][6].reshape(cams, k, -1)
        rows_ref = np.concatenate([ref.sum(axis=(0, 1))[None], ref.sum(axis=0), ref.sum(axis=1)])
        rows_cur = np.concatenate([cur.sum(axis=(0, 1))[None], cur.sum(axis=0), cur.sum(axis=1)])
        stats = binned_stats_many(rows_ref, rows_cur, bins[s])
        n_slices += len(stats)
        if s == "confidence":  # the 20 drifted cameras should be the ones flagged
            flagged = [j for j, x in enumerate(stats[1 + k :]) if x.enough_data and x.ks_p < 0.01]
    vref, vcur = volume[:6].sum(axis=0), volume[6]
    stats = binned_stats_many(
        np.concatenate([vref.sum(axis=0)[None], vref]),
        np.concatenate([vcur.sum(axis=0)[None], vcur]),
        bins["volume"],
    )
    n_slices += len(stats)
    t_week = _t.perf_counter() - t
    # baseline: the exact path on the raw week's overall slice (regenerated, same seeds)
    raw = [_fleet_day(d, per_day, cams, days - 1) for d in range(days)]
    ref_conf = np.concatenate([r[2] for r in raw[:6]])
    ref_size = np.concatenate([r[3] for r in raw[:6]])
    ref_vol = np.concatenate([r[4] for r in raw[:6]])
    cur = raw[6]
    del raw
    t_exact, _ = timed(
        lambda: (
            exact_stats(ref_conf, cur[2]),
            exact_stats(ref_size, cur[3]),
            exact_stats(ref_vol, cur[4]),
        )
    )
    yield Case(
        "drift.fleet.week_check_seconds",
        round(t_week, 3),
        "s",
        f"exact path on the raw week, overall slice only (rollups: {n_slices} slices; "
        f"{len(flagged)} camera slices flagged, {sum(j < 20 for j in flagged)} of them drifted)",
        round(t_exact, 3),
    )


def _sort_rate(n: int) -> float:
    values = np.random.default_rng(9).random(n).astype(np.float32)
    t, _ = timed(lambda: np.sort(values))
    return n / t

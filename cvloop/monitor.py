"""The weekly drift check: three detection-native signals, per slice, two windows.

Signals (from the inference log, :mod:`cvloop.inference_log`):

* ``confidence``: detection confidences;
* ``size``: box area as a fraction of the frame (``w * h``);
* ``volume``: detections per frame.

Slices: ``overall``, each ``class`` (confidence and size of that class's detections; the
per-frame count of that class for volume), each ``camera`` and each camera ``group``.
Each slice gets KS (statistic and p-value), PSI and normed Wasserstein
(:mod:`cvloop.drift`). A slice with fewer than ``min_slice_detections`` values on either
side is "not enough data" and is never flagged.

Small windows run the exact path on the raw log; windows above ``exact_max_detections``
run on the daily rollups (:mod:`cvloop.rollups`), whose cost is in proportion to the bins.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cvloop.drift import Bins, DriftStats, binned_stats_many, exact_stats, signal_bins
from cvloop.inference_log import flatten_detections, read_log
from cvloop.rollups import ALL, build_rollup, histogram, load_rollups
from cvloop.storage import Storage

SIGNALS = ("confidence", "size", "volume")


@dataclass(frozen=True)
class Window:
    start: dt.datetime
    end: dt.datetime

    @property
    def days(self) -> list[dt.date]:
        out, day = [], self.start.date()
        while dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC) < self.end:
            out.append(day)
            day += dt.timedelta(days=1)
        return out

    def label(self) -> str:
        last = (self.end - dt.timedelta(milliseconds=1)).date()
        return f"{self.start.date()}..{last}"


def windows(
    current_end: dt.date,
    current_days: int,
    reference_days: int,
    reference_start: dt.date | None = None,
) -> tuple[Window, Window]:
    """(reference, current). The current window is the ``current_days`` before
    ``current_end`` (exclusive); the reference is ``reference_days`` from
    ``reference_start``, or the period just before the current window."""

    def at(day: dt.date) -> dt.datetime:
        return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)

    cur = Window(at(current_end - dt.timedelta(days=current_days)), at(current_end))
    ref_start = reference_start or (current_end - dt.timedelta(days=current_days + reference_days))
    ref = Window(at(ref_start), at(ref_start + dt.timedelta(days=reference_days)))
    return ref, cur


@dataclass
class SliceDrift:
    """One signal on one slice."""

    signal: str
    kind: str  # overall | class | camera | group
    name: str
    stats: DriftStats
    path: str  # exact | rollup

    def row(self) -> dict:
        return {
            "signal": self.signal,
            "kind": self.kind,
            "slice": self.name,
            "path": self.path,
            **asdict(self.stats),
        }


# ---- exact path -----------------------------------------------------------------------------
def _values(table: pa.Table, flat: pa.Table, signal: str, kind: str, name: str) -> np.ndarray:
    if signal == "volume":
        counts_of = table
        if kind in ("camera", "group"):
            col = "camera" if kind == "camera" else "camera_group"
            counts_of = table.filter(pc.equal(table.column(col), name))
        dets = counts_of.column("detections")
        if kind == "class":
            labels = pc.list_flatten(dets)
            parents = pc.list_parent_indices(dets).to_numpy()
            sel = pc.equal(pc.struct_field(labels, [0]), name).to_numpy(zero_copy_only=False)
            return np.bincount(parents[sel], minlength=counts_of.num_rows).astype(np.float64)
        return pc.list_value_length(dets).fill_null(0).to_numpy().astype(np.float64)
    rows = flat
    if kind == "class":
        rows = flat.filter(pc.equal(flat.column("label"), name))
    elif kind in ("camera", "group"):
        rows = flat.filter(
            pc.equal(flat.column("camera" if kind == "camera" else "camera_group"), name)
        )
    if signal == "confidence":
        return rows.column("conf").to_numpy().astype(np.float64)
    return (pc.multiply(rows.column("w"), rows.column("h"))).to_numpy().astype(np.float64)


def _slices(tables: list[pa.Table], classes: list[str]) -> list[tuple[str, str]]:
    cams = sorted({c for t in tables for c in t.column("camera").to_pylist()})
    groups = sorted({g for t in tables for g in t.column("camera_group").to_pylist()})
    out = [("overall", ALL)]
    out += [("class", c) for c in classes]
    out += [("camera", c) for c in cams]
    if len(groups) > 1:
        out += [("group", g) for g in groups]
    return out


def drift_exact(
    store: Storage, ref: Window, cur: Window, classes: list[str], min_samples: int
) -> list[SliceDrift]:
    cols = ["camera", "camera_group", "detections"]
    t_ref = read_log(store, ref.start, ref.end, columns=cols)
    t_cur = read_log(store, cur.start, cur.end, columns=cols)
    f_ref, f_cur = flatten_detections(t_ref), flatten_detections(t_cur)
    out = []
    for kind, name in _slices([t_ref, t_cur], classes):
        for signal in SIGNALS:
            a = _values(t_ref, f_ref, signal, kind, name)
            b = _values(t_cur, f_cur, signal, kind, name)
            out.append(SliceDrift(signal, kind, name, exact_stats(a, b, min_samples), "exact"))
    return out


# ---- rollup path ----------------------------------------------------------------------------
def window_rollups(
    store: Storage, w: Window, labels: list[str], bins: dict[str, Bins] | None = None
) -> pa.Table:
    """The rollups of a window's days, built first where missing or stale (a rollup made
    with other bins is stale)."""
    for day in w.days:
        build_rollup(store, day, bins=bins, labels=labels)
    return load_rollups(store, w.days[0], w.days[-1] + dt.timedelta(days=1))


def drift_rollups(
    store: Storage,
    ref: Window,
    cur: Window,
    classes: list[str],
    min_samples: int,
    rollups: tuple[pa.Table, pa.Table] | None = None,
    bins: dict[str, Bins] | None = None,
) -> list[SliceDrift]:
    """Every signal on every slice from the rollups (``rollups``: already loaded
    reference and current tables, made with ``bins``)."""
    bins = bins or signal_bins()
    r_ref, r_cur = rollups or (
        window_rollups(store, ref, classes, bins),
        window_rollups(store, cur, classes, bins),
    )
    out = []
    slices = _slices([r_ref, r_cur], classes)
    for signal in SIGNALS:
        nb = bins[signal].n
        rows_ref, rows_cur = [], []
        for kind, name in slices:
            where = {"label": ALL}
            if kind == "class":
                where = {"label": name}
            elif kind == "camera":
                where["camera"] = name
            elif kind == "group":
                where["camera_group"] = name
            rows_ref.append(histogram(r_ref, signal, nb, **where))
            rows_cur.append(histogram(r_cur, signal, nb, **where))
        stats = binned_stats_many(np.stack(rows_ref), np.stack(rows_cur), bins[signal], min_samples)
        out += [
            SliceDrift(signal, kind, name, s, "rollup")
            for (kind, name), s in zip(slices, stats, strict=True)
        ]
    return out


def count_detections(rollups: pa.Table) -> int:
    """Detections counted in a rollup table (cheap: one number per row)."""
    r = rollups
    mask = pc.and_(pc.equal(r.column("signal"), "confidence"), pc.equal(r.column("label"), ALL))
    return int(pc.sum(r.filter(mask).column("n")).as_py() or 0)


def compute_drift(
    store: Storage,
    ref: Window,
    cur: Window,
    classes: list[str],
    min_samples: int,
    exact_max: int,
    bins: dict[str, Bins] | None = None,
) -> list[SliceDrift]:
    """Every signal on every slice; exact when both windows hold at most ``exact_max``
    detections, else from the rollups (loaded once, for the count and the statistics)."""
    bins = bins or signal_bins()
    r_ref = window_rollups(store, ref, classes, bins)
    r_cur = window_rollups(store, cur, classes, bins)
    if count_detections(r_ref) + count_detections(r_cur) <= exact_max:
        return drift_exact(store, ref, cur, classes, min_samples)
    return drift_rollups(store, ref, cur, classes, min_samples, (r_ref, r_cur), bins)


def most_drifted(rows: list[SliceDrift], k: int = 10) -> list[SliceDrift]:
    """Slices with enough data, most drifted first (largest KS statistic)."""
    ok = [r for r in rows if r.stats.enough_data and not math.isnan(r.stats.ks_stat)]
    return sorted(ok, key=lambda r: -r.stats.ks_stat)[:k]

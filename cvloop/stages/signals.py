"""The weekly drift check: three detection-native signals, per slice, two windows.

Signals (from the inference log, :mod:`cvloop.adapters.inference_log`):

* ``confidence``: detection confidences;
* ``size``: box area as a fraction of the frame (``w * h``);
* ``volume``: detections per frame.

Slices: ``overall``, each ``class`` (confidence and size of that class's detections; the
per-frame count of that class for volume), each ``camera`` and each camera ``group``.
Each slice gets KS (statistic and p-value), PSI and normed Wasserstein
(:mod:`cvloop.core.drift`). A slice with fewer than ``min_slice_detections`` values on either
side is "not enough data" and is never flagged.

Small windows run the exact path on the raw log; windows above ``exact_max_detections``
run on the daily rollups (:mod:`cvloop.adapters.rollups`), whose cost is in proportion to the bins.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cvloop.adapters.inference_log import flatten_detections, read_log
from cvloop.adapters.rollups import ALL, build_rollup, histogram, load_rollups
from cvloop.adapters.storage import Storage
from cvloop.core.drift import Bins, DriftStats, binned_stats_many, exact_stats, signal_bins
from cvloop.core.signals import SIGNALS, SliceDrift, Window


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


def _only(table: pa.Table, groups: list[str] | None) -> pa.Table:
    """The rows of ``groups`` (all rows when None)."""
    if groups is None:
        return table
    return table.filter(pc.is_in(table.column("camera_group"), pa.array(groups, pa.string())))


def drift_exact(
    store: Storage,
    ref: Window,
    cur: Window,
    classes: list[str],
    min_samples: int,
    groups: list[str] | None = None,
) -> list[SliceDrift]:
    cols = ["camera", "camera_group", "detections"]
    t_ref = _only(read_log(store, ref.start, ref.end, columns=cols), groups)
    t_cur = _only(read_log(store, cur.start, cur.end, columns=cols), groups)
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
    groups: list[str] | None = None,
) -> list[SliceDrift]:
    """Every signal on every slice; exact when both windows hold at most ``exact_max``
    detections, else from the rollups (loaded once, for the count and the statistics).
    ``groups``: only the frames of these camera groups (None: all)."""
    bins = bins or signal_bins()
    r_ref = _only(window_rollups(store, ref, classes, bins), groups)
    r_cur = _only(window_rollups(store, cur, classes, bins), groups)
    if count_detections(r_ref) + count_detections(r_cur) <= exact_max:
        return drift_exact(store, ref, cur, classes, min_samples, groups)
    return drift_rollups(store, ref, cur, classes, min_samples, (r_ref, r_cur), bins)


# ---- camera groups: each starts with its own reference window -------------------------------
GROUPS_FIRST_SEEN = "monitor/camera-groups.json"


def group_first_days(store: Storage, until: dt.date) -> dict[str, dt.date]:
    """The first day each camera group appears in the inference log (before ``until``).

    Kept in the store (``monitor/camera-groups.json``) with the number of log parts each
    day had when it was read, so a check reads only days that are new or got new parts
    since (late uploads and back-filled days included)."""
    import json

    from cvloop.adapters.inference_log import log_parts

    seen: dict[str, str] = {}
    scanned: dict[str, int] = {}
    if store.exists(GROUPS_FIRST_SEEN):
        state = json.loads(store.get_text(GROUPS_FIRST_SEEN))
        seen, scanned = dict(state.get("first_seen", {})), dict(state.get("parts", {}))
    # one listing; a part in an odd folder is quarantined there
    parts = {d.isoformat(): len(keys) for d, keys in log_parts(store).items()}
    for d, n in sorted(parts.items()):
        if d >= until.isoformat() or scanned.get(d) == n:
            continue
        day = dt.date.fromisoformat(d)
        t = read_log(store, day, day + dt.timedelta(days=1), columns=["camera_group"])
        for g in pc.unique(t.column("camera_group")).to_pylist() if t.num_rows else []:
            if g not in seen or d < seen[g]:
                seen[g] = d
        scanned[d] = n
    store.put_text(GROUPS_FIRST_SEEN, json.dumps({"first_seen": seen, "parts": scanned},
                                                 indent=2))  # fmt: skip
    return {g: dt.date.fromisoformat(d) for g, d in seen.items() if d < until.isoformat()}


def compute_drift_by_group(
    store: Storage,
    ref: Window,
    cur: Window,
    classes: list[str],
    min_samples: int,
    exact_max: int,
    reference_days: int,
    bins: dict[str, Bins] | None = None,
) -> list[SliceDrift]:
    """:func:`compute_drift`, with camera groups that joined the fleet after the reference
    window on their own baseline: the fleet-wide slices (overall, classes, cameras) leave
    them out, and each such group is compared with its own first ``reference_days`` once
    those are over ("baselining until <day>" before, never flagged). A new region or group
    does not fire the drift trigger on its first day."""
    first = group_first_days(store, cur.end.date())
    ref_end = ref.end.date()
    new = sorted(g for g, d in first.items() if d >= ref_end)
    if not new:
        return compute_drift(store, ref, cur, classes, min_samples, exact_max, bins)
    old = sorted(g for g in first if g not in new)
    out = compute_drift(store, ref, cur, classes, min_samples, exact_max, bins, groups=old)
    for g in new:
        start = first[g]
        own = Window(
            dt.datetime.combine(start, dt.time(), tzinfo=dt.UTC),
            dt.datetime.combine(
                start + dt.timedelta(days=reference_days), dt.time(), tzinfo=dt.UTC
            ),
        )
        if cur.start < own.end:
            note = f"baselining until {own.end.date()}"
            out += [
                SliceDrift(s, "group", g, DriftStats(math.nan, math.nan, math.nan, math.nan,
                                                     0, 0, False), note)
                for s in SIGNALS
            ]  # fmt: skip
            continue
        rows = compute_drift(store, own, cur, classes, min_samples, exact_max, bins, groups=[g])
        for r in rows:
            if r.kind == "overall":
                out.append(SliceDrift(r.signal, "group", g, r.stats, f"{r.path}, own baseline"))
            elif r.kind == "camera":
                out.append(SliceDrift(r.signal, r.kind, r.name, r.stats,
                                      f"{r.path}, own baseline"))  # fmt: skip
    return out

"""What operators see: the drift dashboard (Evidently HTML), histogram plots, and the
markdown artifact of each monitor run."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cvloop.stages.monitor import (
    Windows,
)

if TYPE_CHECKING:
    from cvloop.context import Context

SAMPLE_ROWS = 50_000  # frames per window fed to the dashboard (bounded cost at fleet scale)


@dataclass(frozen=True)
class Sample:
    """Detections of a bounded sample of a window: label, confidence, box area, group."""

    label: np.ndarray
    conf: np.ndarray
    area: np.ndarray
    group: np.ndarray

    def where(self, mask: np.ndarray) -> Sample:
        return Sample(self.label[mask], self.conf[mask], self.area[mask], self.group[mask])


def _sample(
    store, start: dt.datetime, end: dt.datetime, cameras: list[str] | None, max_frames: int
) -> Sample:
    """A bounded sample of a window's log: day partitions in order until ``max_frames``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from cvloop.adapters.inference_log import flatten_detections, read_log

    parts, total, day = [], 0, start
    while day < end and total < max_frames:
        nxt = min(end, day + dt.timedelta(days=1))
        t = read_log(
            store, day, nxt, cameras=cameras, columns=["camera", "camera_group", "detections"]
        )
        parts.append(t)
        total += t.num_rows
        day = nxt
    if not parts or sum(p.num_rows for p in parts) == 0:
        empty = np.zeros(0)
        return Sample(empty.astype(object), empty, empty, empty.astype(object))
    flat = flatten_detections(pa.concat_tables(parts))
    return Sample(
        np.asarray(flat["label"].to_pylist(), dtype=object),
        flat["conf"].to_numpy(),
        pc.multiply(flat["w"], flat["h"]).to_numpy(),
        np.asarray(flat["camera_group"].to_pylist(), dtype=object),
    )


def build_drift_dashboard(ctx: Context, w: Windows, rows: list[dict], out_dir: Path) -> list[str]:
    """Evidently HTML report + PNG histograms (reference vs current) into ``out_dir``."""
    import pandas as pd

    from cvloop.stages.monitor import _slices_from_rows

    store = ctx.store
    ref, cur = w.as_windows()
    files = []
    ref_s = _sample(store, ref.start, ref.end, None, SAMPLE_ROWS)
    cur_s = _sample(store, cur.start, cur.end, None, SAMPLE_ROWS)
    if len(ref_s.conf) and len(cur_s.conf):
        from evidently import DataDefinition, Dataset, Report
        from evidently.metrics import ValueDrift

        dd = DataDefinition(numerical_columns=["confidence", "box_area"])
        rdf = pd.DataFrame({"confidence": ref_s.conf, "box_area": ref_s.area})
        cdf = pd.DataFrame({"confidence": cur_s.conf, "box_area": cur_s.area})
        report = Report(
            [
                ValueDrift(column=c, method=m)
                for c in ("confidence", "box_area")
                for m in ("ks", "psi", "wasserstein")
            ]
        )
        snap = report.run(
            current_data=Dataset.from_pandas(cdf, data_definition=dd),
            reference_data=Dataset.from_pandas(rdf, data_definition=dd),
        )
        snap.save_html(str(out_dir / "drift-report.html"))
        files.append("drift-report.html")
    top = [r for r in _slices_from_rows(rows) if r.signal == "confidence" and r.stats.enough_data]
    top = sorted(top, key=lambda r: -r.stats.ks_stat)[:4]
    files.append(_plot_confidence(store, w, top, out_dir, ref_s, cur_s))
    files.append(plot_volume(store, w, out_dir))
    return files


VolumeByDay = dict[str, dict[dt.date, tuple[int, int]]]  # camera -> day -> (frames, detections)


def volume_by_day(store, days: list[dt.date]) -> VolumeByDay:
    """Frames logged and their detections, per camera and day: from the day's rollup where
    there is one (the monitor's rollup path made it: its cost is the bins), else from the
    day's log (the detection counts only)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from cvloop.adapters.inference_log import detections_per_frame, read_log
    from cvloop.adapters.rollups import ALL, load_rollups

    out: VolumeByDay = {}

    def add(camera: str, day: dt.date, frames: int, dets: int) -> None:
        f, d = out.setdefault(camera, {}).get(day, (0, 0))
        out[camera][day] = (f + frames, d + dets)

    for day in days:
        r = load_rollups(store, day, day + dt.timedelta(days=1))
        r = r.filter(pc.and_(pc.equal(r["signal"], "volume"), pc.equal(r["label"], ALL)))
        if r.num_rows:
            for cam, counts in zip(r["camera"].to_pylist(), r["counts"].to_pylist(), strict=True):
                c = np.asarray(counts, dtype=np.int64)  # one bin per count: 0, 1, 2, ...
                add(cam, day, int(c.sum()), int((c * np.arange(len(c))).sum()))
            continue
        t0 = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
        t = read_log(store, t0, t0 + dt.timedelta(days=1), columns=["camera", "detections"])
        if not t.num_rows:
            continue
        g = pa.table({"camera": t["camera"], "n": detections_per_frame(t)}).group_by(
            "camera", use_threads=False
        )
        g = g.aggregate([("n", "count"), ("n", "sum")])
        for cam, frames, dets in zip(g["camera"].to_pylist(), g["n_count"].to_pylist(),
                                     g["n_sum"].to_pylist(), strict=True):  # fmt: skip
            add(cam, day, int(frames), int(dets))
    return out


def _mean(days: dict[dt.date, tuple[int, int]], among: list[dt.date]) -> float:
    frames = sum(days[d][0] for d in among if d in days)
    return sum(days[d][1] for d in among if d in days) / frames if frames else float("nan")


def plot_volume(store, w: Windows, out_dir: Path, top: int = 6) -> str:
    """The third signal on the dashboard: detections per frame per day, reference window
    beside current window, for the whole fleet and the ``top`` cameras whose volume moved
    most, with the frames logged per day under it (a camera that stopped sending shows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref, cur = w.as_windows()
    per = volume_by_day(store, sorted({*ref.days, *cur.days}))
    fleet: dict[dt.date, tuple[int, int]] = {}
    for days in per.values():
        for d, (f, n) in days.items():
            a, b = fleet.get(d, (0, 0))
            fleet[d] = (a + f, b + n)
    moved = sorted(per, key=lambda c: -abs(np.nan_to_num(_mean(per[c], cur.days)
                                                         - _mean(per[c], ref.days))))  # fmt: skip
    fig, axes = plt.subplots(2, 2, figsize=(11, 5.2), sharey="row", squeeze=False,
                             gridspec_kw={"height_ratios": [2, 1]})  # fmt: skip
    for col, (win, label) in enumerate(((ref, "reference"), (cur, "current"))):
        ax, below = axes[0][col], axes[1][col]
        for cam, days, style in [("all cameras", fleet, {"color": "black", "lw": 2.2}),
                                 *[(c, per[c], {"lw": 1.1}) for c in moved[:top]]]:  # fmt: skip
            xs = [d for d in win.days if d in days and days[d][0]]
            ax.plot(xs, [days[d][1] / days[d][0] for d in xs], marker=".", label=cam, **style)
        ax.set_title(f"detections per frame, {label} {win.label()}", fontsize=9)
        below.bar(win.days, [fleet.get(d, (0, 0))[0] for d in win.days], color="grey")
        for a in (ax, below):
            a.tick_params(axis="x", labelrotation=30, labelsize=7)
    axes[0][0].set_ylabel("mean detections / frame")
    axes[1][0].set_ylabel("frames logged")
    axes[0][1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    name = "detection-volume.png"
    fig.savefig(out_dir / name, dpi=90)
    plt.close(fig)
    return name


def _panel(
    store, w: Windows, kind: str, name: str, ref_s: Sample, cur_s: Sample
) -> tuple[np.ndarray, np.ndarray]:
    """A slice's confidences: from the window samples already read, except a camera's,
    read for that camera (the bounded overall sample may barely hold it)."""
    if kind == "camera":
        ref, cur = w.as_windows()
        return (
            _sample(store, ref.start, ref.end, [name], SAMPLE_ROWS).conf,
            _sample(store, cur.start, cur.end, [name], SAMPLE_ROWS).conf,
        )
    if kind == "class":
        return ref_s.where(ref_s.label == name).conf, cur_s.where(cur_s.label == name).conf
    if kind == "group":
        return ref_s.where(ref_s.group == name).conf, cur_s.where(cur_s.group == name).conf
    return ref_s.conf, cur_s.conf


def _plot_confidence(store, w: Windows, slices, out_dir: Path, ref_s: Sample, cur_s: Sample) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref, cur = w.as_windows()
    panels = [("overall", "*"), *[(s.kind, s.name) for s in slices if s.kind != "overall"][:3]]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    bins = np.linspace(0, 1, 41)
    for ax, (kind, name) in zip(axes[0], panels, strict=False):
        r, c = _panel(store, w, kind, name, ref_s, cur_s)
        ax.hist(r, bins=bins, density=True, alpha=0.55, label=f"reference {ref.label()}")
        ax.hist(c, bins=bins, density=True, alpha=0.55, label=f"current {cur.label()}")
        ax.set_title(f"confidence: {kind} {name}" if kind != "overall" else "confidence: overall")
        ax.set_xlabel("detection confidence")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    name = "confidence-histograms.png"
    fig.savefig(out_dir / name, dpi=90)
    plt.close(fig)
    return name

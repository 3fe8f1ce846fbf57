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
    return files


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

"""The weekly drift check's vocabulary: the three signals, the two windows, one slice's
drift numbers, and the ranking of the most drifted slices (pure; the log is read in
``cvloop/stages/signals.py``)."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass

from cvloop.core.drift import DriftStats

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
    path: str  # exact | rollup (", own baseline": a new camera group's) | baselining until …

    def row(self) -> dict:
        return {
            "signal": self.signal,
            "kind": self.kind,
            "slice": self.name,
            "path": self.path,
            **asdict(self.stats),
        }


def most_drifted(rows: list[SliceDrift], k: int = 10) -> list[SliceDrift]:
    """Slices with enough data, most drifted first (largest KS statistic)."""
    ok = [r for r in rows if r.stats.enough_data and not math.isnan(r.stats.ks_stat)]
    return sorted(ok, key=lambda r: -r.stats.ks_stat)[:k]

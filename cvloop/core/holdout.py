"""The quarterly holdout refresh (runbook, "The shape of a quarter"): which production frames
of the last quarter become the next holdout version.

The holdout measures the model on what the fleet sees *now*, so the sample is spread evenly
over the strata that change what a frame looks like: camera x month x part of the day
(night, morning, afternoon, evening). Each stratum gets an equal share of the target; a
stratum with fewer frames gives its unused share to the others. Within a stratum the pick
is a deterministic hash order (seeded by the quarter), so a re-run of the same refresh picks
the same frames: no duplicate labeling work after a crash.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

DAYPARTS = ((0, 6, "night"), (6, 12, "morning"), (12, 18, "afternoon"), (18, 24, "evening"))


def daypart(ts_ms: int) -> str:
    hour = dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC).hour
    return next(name for lo, hi, name in DAYPARTS if lo <= hour < hi)


def stratum(row: dict) -> tuple[str, str, str]:
    """(camera, month, part of day) of a collected frame row."""
    month = dt.datetime.fromtimestamp(row["ts_ms"] / 1000, dt.UTC).strftime("%Y-%m")
    return (row["camera"], month, daypart(int(row["ts_ms"])))


def _order(seed: str, sha: str) -> str:
    return hashlib.sha256(f"{seed}:{sha}".encode()).hexdigest()


@dataclass(frozen=True)
class Sample:
    rows: list[dict]  # the picked rows, each with "why"
    strata: dict[str, int]  # "camera month part" -> frames picked
    available: dict[str, int]  # "camera month part" -> frames there were


def stratified_sample(
    rows: Iterable[dict],
    target: int,
    seed: str,
    key: Callable[[dict], tuple[str, ...]] = stratum,
    why: str = "holdout refresh",
) -> Sample:
    """Up to ``target`` rows spread evenly over the strata ``key`` puts them in (default:
    camera x month x part of day; water-filling: a small stratum takes all it has, the rest
    share what it left); deterministic for a given ``seed``."""
    by: dict[tuple[str, ...], list[dict]] = defaultdict(list)
    for r in rows:
        by[key(r)].append(r)
    for k in by:
        by[k].sort(key=lambda r: _order(seed, r["sha256"]))
    quota = _water_fill({k: len(v) for k, v in by.items()}, target)
    picked = []
    for k in sorted(by):
        for r in by[k][: quota[k]]:
            picked.append({**r, "why": [f"{why}: {', '.join(k)}"]})
    return Sample(
        picked,
        {" ".join(k): quota[k] for k in sorted(by)},
        {" ".join(k): len(v) for k, v in sorted(by.items())},
    )


def _water_fill(sizes: dict, target: int) -> dict:
    """Equal shares of ``target`` over the keys, capped by each key's size; what a capped key
    cannot take goes to the others. The remainder of an uneven split goes to the largest."""
    quota = dict.fromkeys(sizes, 0)
    left = max(0, min(target, sum(sizes.values())))
    open_keys = [k for k in sorted(sizes) if sizes[k] > 0]
    while left > 0 and open_keys:
        share = max(1, left // len(open_keys))
        for k in sorted(open_keys, key=lambda k: (-(sizes[k] - quota[k]), k)):
            if left == 0:
                break
            take = min(share, sizes[k] - quota[k], left)
            quota[k] += take
            left -= take
        open_keys = [k for k in open_keys if quota[k] < sizes[k]]
    return quota


def refresh_target(frames: int, min_frames: int, max_frames: int) -> int:
    """The number of frames to send for labeling: ``frames`` within the holdout's bounds."""
    return max(min_frames, min(max_frames, frames))


def describe_strata(sample: Sample) -> Sequence[str]:
    cams = sorted({k.split(" ")[0] for k, n in sample.strata.items() if n})
    months = sorted({k.split(" ")[1] for k, n in sample.strata.items() if n})
    parts = sorted({k.split(" ")[2] for k, n in sample.strata.items() if n})
    return cams, months, parts

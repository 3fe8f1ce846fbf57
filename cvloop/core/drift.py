"""Drift statistics for detection-native signals: KS, PSI, Wasserstein — exact and binned.

Two paths compute the same three statistics:

* **exact**, from the raw values of two windows (small enough windows):

  - KS: the two-sample Kolmogorov–Smirnov statistic and p-value, the same method as
    ``scipy.stats.ks_2samp`` (exact distribution up to 10,000 values per side,
    Smirnov's asymptotic distribution above);
  - PSI: over Evidently's bins (Sturges edges of both windows, empty bins filled as
    Evidently does), so it equals Evidently's ``psi`` test;
  - Wasserstein: the first Wasserstein distance normed by the reference's standard
    deviation (floored at 0.001), Evidently's ``wasserstein`` test.

* **binned**, from mergeable fixed-bin histograms (the daily rollups): the same statistics
  on the binned distributions. KS is computed at bin edges, so it can miss at most the
  mass of one bin on each side, and its p-value uses Kolmogorov's limiting distribution
  (relative difference O(1/sqrt(n)) from the finite-n one); Wasserstein uses bin centres
  (error at most half a bin width); PSI uses ten merged rollup bins instead of Sturges
  bins. The tolerance between
  the paths is measured in ``tests/unit/test_drift.py`` and documented in
  ``docs/monitoring.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Fewer values than this on either side: "not enough data", never an alarm.
DEFAULT_MIN_SAMPLES = 200


@dataclass(frozen=True)
class DriftStats:
    """The three statistics for one signal on one slice."""

    ks_stat: float
    ks_p: float
    psi: float
    wasserstein: float
    n_ref: int
    n_cur: int
    enough_data: bool = True

    @classmethod
    def not_enough(cls, n_ref: int, n_cur: int) -> DriftStats:
        nan = float("nan")
        return cls(nan, nan, nan, nan, n_ref, n_cur, False)


# ---- exact path -----------------------------------------------------------------------------
def _merged_cdfs(rs: np.ndarray, cs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both empirical CDFs on the merged sorted sample, from one stable merge of two runs."""
    allv = np.concatenate([rs, cs])
    order = np.argsort(allv, kind="stable")  # two sorted runs: a near-linear merge
    vals = allv[order]
    from_ref = order < len(rs)
    c1 = np.cumsum(from_ref) / len(rs)
    c2 = np.cumsum(~from_ref) / len(cs)
    return vals, c1, c2


def ks_from_cdfs(
    vals: np.ndarray, c1: np.ndarray, c2: np.ndarray, n1: int, n2: int
) -> tuple[float, float]:
    """Two-sided KS statistic and asymptotic p-value (Smirnov), as ``scipy.stats.ks_2samp``
    computes them for large samples: CDFs compared at the end of each run of ties."""
    from scipy.stats import distributions

    last = np.empty(len(vals), dtype=bool)
    last[:-1] = vals[1:] != vals[:-1]
    last[-1] = True
    diff = c1[last] - c2[last]
    d = float(max(np.clip(-diff.min(), 0, 1), diff.max()))
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = np.round(m * n / (m + n))
    # Far in the tail scipy's finite-n kstwo costs ~0.5 s per call at 10^6 values; there
    # Kolmogorov's limiting distribution gives the same answer to well under 1e-12.
    p_lim = float(distributions.kstwobign.sf(d * np.sqrt(en)))
    if p_lim < 1e-13:
        return d, p_lim
    return d, float(np.clip(distributions.kstwo.sf(d, en), 0, 1))


def wasserstein_from_cdfs(vals: np.ndarray, c1: np.ndarray, c2: np.ndarray) -> float:
    """First Wasserstein distance (scipy's CDF-distance method) on the merged sample."""
    return float(np.sum(np.multiply(np.abs(c1[:-1] - c2[:-1]), np.diff(vals))))


def ks_2samp(
    ref_sorted: np.ndarray,
    cur_sorted: np.ndarray,
    cdfs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[float, float]:
    """Two-sided two-sample KS on *sorted* arrays, ``scipy.stats.ks_2samp(method="auto")``:
    the exact distribution up to 10,000 values per side, Smirnov's asymptotic one above
    (from ``cdfs``, the :func:`_merged_cdfs` of the two samples, when already computed)."""
    n1, n2 = len(ref_sorted), len(cur_sorted)
    if max(n1, n2) <= 10_000:
        from scipy.stats import ks_2samp as _scipy_ks

        res = _scipy_ks(ref_sorted, cur_sorted)
        return float(res.statistic), float(res.pvalue)
    return ks_from_cdfs(*(cdfs or _merged_cdfs(ref_sorted, cur_sorted)), n1, n2)


def _sturges_edges(lo: float, hi: float, n: int) -> np.ndarray:
    """``np.histogram_bin_edges(x, "sturges")`` from the range and size of ``x``."""
    if hi == lo:
        return np.histogram_bin_edges(np.array([lo]), bins=1)
    width = (hi - lo) / (np.log2(n) + 1.0)
    k = int(np.ceil((hi - lo) / width))
    return np.linspace(lo, hi, k + 1, endpoint=True)


def _sorted_hist(xs: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``np.histogram(x, edges)`` counts of a *sorted* array (bins [e_i, e_i+1), last closed)."""
    cuts = np.searchsorted(xs, edges[1:-1], side="left")
    return np.diff(np.concatenate([[0], cuts, [len(xs)]]))


def psi_evidently(ref: np.ndarray, cur: np.ndarray) -> float:
    """PSI over Evidently's bins (Sturges edges of both windows; zero bins filled).

    Arrays must be sorted. Like Evidently, a sample with at most 20 distinct values is
    binned by value.
    """
    if np.count_nonzero(np.diff(ref)) + 1 <= 20:  # distinct values of a sorted array
        ref_u, ref_n = np.unique(ref, return_counts=True)
        cur_u, cur_n = np.unique(cur, return_counts=True)
        keys = np.union1d(ref_u, cur_u)
        ref_p = np.zeros(len(keys))
        cur_p = np.zeros(len(keys))
        ref_p[np.searchsorted(keys, ref_u)] = ref_n / len(ref)
        cur_p[np.searchsorted(keys, cur_u)] = cur_n / len(cur)
    else:
        edges = _sturges_edges(min(ref[0], cur[0]), max(ref[-1], cur[-1]), len(ref) + len(cur))
        ref_p = _sorted_hist(ref, edges) / len(ref)
        cur_p = _sorted_hist(cur, edges) / len(cur)
    return _psi(_fill_zeros(ref_p.astype(float)), _fill_zeros(cur_p.astype(float)))


def _fill_zeros(p: np.ndarray) -> np.ndarray:
    nz = p[p != 0]
    if nz.size == 0:
        return p
    low = nz.min()
    p = p.copy()
    p[p == 0] = low / 10**6 if low <= 0.0001 else 0.0001
    return p


def _psi(ref_p: np.ndarray, cur_p: np.ndarray) -> float:
    return float(np.sum((ref_p - cur_p) * np.log(ref_p / cur_p)))


def exact_stats(
    ref: np.ndarray, cur: np.ndarray, min_samples: int = DEFAULT_MIN_SAMPLES
) -> DriftStats:
    """KS, PSI and normed Wasserstein of two raw samples: each side sorted once, one merge
    shared by KS and Wasserstein, PSI counted on the sorted arrays."""
    ref = np.asarray(ref, dtype=np.float64)
    cur = np.asarray(cur, dtype=np.float64)
    if len(ref) < min_samples or len(cur) < min_samples:
        return DriftStats.not_enough(len(ref), len(cur))
    rs, cs = np.sort(ref), np.sort(cur)
    cdfs = _merged_cdfs(rs, cs)
    d, p = ks_2samp(rs, cs, cdfs)
    w = wasserstein_from_cdfs(*cdfs)
    norm = max(float(np.std(ref)), 0.001)
    return DriftStats(d, p, psi_evidently(rs, cs), w / norm, len(ref), len(cur))


# ---- binned path ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Bins:
    """Fixed bin edges of one signal; values outside fall into the first/last bin.

    ``kind`` selects an O(1)-per-value index for the regular grids (``linear``, ``log``,
    ``integer``); ``search`` uses the edges directly.
    """

    name: str
    edges: np.ndarray
    kind: str = "search"

    @property
    def n(self) -> int:
        return len(self.edges) - 1

    @property
    def centres(self) -> np.ndarray:
        return (self.edges[:-1] + self.edges[1:]) / 2

    def index(self, values: np.ndarray) -> np.ndarray:
        x = np.asarray(values)
        if self.kind == "linear":
            lo, hi = float(self.edges[0]), float(self.edges[-1])
            idx = np.floor((x - lo) * (self.n / (hi - lo)))
        elif self.kind == "log":  # bin 0 = [0, first), then log-spaced
            first, last = float(self.edges[1]), float(self.edges[-1])
            steps = (self.n - 1) / (np.log10(last) - np.log10(first))
            with np.errstate(divide="ignore", invalid="ignore"):
                idx = np.where(
                    x < first,
                    0,
                    1 + np.floor((np.log10(np.maximum(x, first)) - np.log10(first)) * steps),
                )
        elif self.kind == "integer":
            idx = np.rint(x - (float(self.edges[0]) + 0.5))
        else:
            return np.clip(np.searchsorted(self.edges, x, side="right") - 1, 0, self.n - 1)
        return np.clip(idx, 0, self.n - 1).astype(np.int64)

    def counts(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.index(values), minlength=self.n).astype(np.int64)


def signal_bins(
    confidence_bins: int = 200, size_bins: int = 200, volume_max: int = 100
) -> dict[str, Bins]:
    """The rollup bins: confidence linear on [0, 1]; box area (fraction of the frame)
    log-spaced on [1e-5, 1] after a [0, 1e-5) bin; detection volume one bin per count
    0..volume_max."""
    return {
        "confidence": Bins("confidence", np.linspace(0.0, 1.0, confidence_bins + 1), "linear"),
        "size": Bins("size", np.concatenate([[0.0], np.logspace(-5, 0, size_bins)]), "log"),
        "volume": Bins("volume", np.arange(0, volume_max + 2, dtype=np.float64) - 0.5, "integer"),
    }


def coarsen(counts: np.ndarray, groups: int) -> np.ndarray:
    """Merge adjacent bins (last axis) into ``groups`` bins: PSI is unstable over many
    sparse bins."""
    size = int(math.ceil(counts.shape[-1] / groups))
    pad = size * groups - counts.shape[-1]
    widths = [(0, 0)] * (counts.ndim - 1) + [(0, pad)]
    padded = np.pad(counts, widths)
    return padded.reshape(*counts.shape[:-1], groups, size).sum(axis=-1)


def _fill_zeros_rows(p: np.ndarray) -> np.ndarray:
    """Evidently's zero filling, row by row."""
    nz_min = np.where(p > 0, p, np.inf).min(axis=1, keepdims=True)
    fill = np.where(nz_min <= 0.0001, nz_min / 10**6, 0.0001)
    return np.where(p == 0, fill, p)


def binned_stats_many(
    ref: np.ndarray,
    cur: np.ndarray,
    bins: Bins,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    psi_groups: int = 10,
) -> list[DriftStats]:
    """KS, PSI and normed Wasserstein for many slices at once: ``ref``/``cur`` are
    ``(slices, bins)`` histograms. PSI uses ``psi_groups`` merged bins (like the ~10
    Sturges bins of the exact path at these sizes); KS and Wasserstein the full grid."""
    from scipy.stats import distributions

    ref = np.atleast_2d(np.asarray(ref, dtype=np.float64))
    cur = np.atleast_2d(np.asarray(cur, dtype=np.float64))
    n1, n2 = ref.sum(axis=1), cur.sum(axis=1)
    ok = (n1 >= min_samples) & (n2 >= min_samples)
    s1, s2 = np.where(ok, n1, 1.0)[:, None], np.where(ok, n2, 1.0)[:, None]
    c1, c2 = np.cumsum(ref, axis=1) / s1, np.cumsum(cur, axis=1) / s2
    d = np.abs(c1 - c2).max(axis=1)
    big, small = np.maximum(n1, n2), np.minimum(n1, n2)
    en = np.where(ok, big * small / np.maximum(big + small, 1), 1)
    # Kolmogorov's limiting distribution: scipy's finite-n ``kstwo`` costs ~30 ms per call at
    # these sizes (30 s for a 1,000-camera fleet) and differs by O(1/sqrt(n)).
    p = np.clip(distributions.kstwobign.sf(d * np.sqrt(en)), 0, 1)
    x = bins.centres
    w = (np.abs(c1[:, :-1] - c2[:, :-1]) * np.diff(x)).sum(axis=1)
    mean = (ref * x).sum(axis=1) / s1[:, 0]
    std = np.sqrt(np.maximum((ref * (x - mean[:, None]) ** 2).sum(axis=1) / s1[:, 0], 0.0))
    w = w / np.maximum(std, 0.001)
    rp = _fill_zeros_rows(coarsen(ref, psi_groups) / s1)
    cp = _fill_zeros_rows(coarsen(cur, psi_groups) / s2)
    psi = ((rp - cp) * np.log(rp / cp)).sum(axis=1)
    out = []
    for k in range(len(ref)):
        if not ok[k]:
            out.append(DriftStats.not_enough(int(n1[k]), int(n2[k])))
        else:
            out.append(
                DriftStats(
                    float(d[k]), float(p[k]), float(psi[k]), float(w[k]), int(n1[k]), int(n2[k])
                )
            )
    return out


def binned_stats(
    ref_counts: np.ndarray,
    cur_counts: np.ndarray,
    bins: Bins,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    psi_groups: int = 10,
) -> DriftStats:
    """:func:`binned_stats_many` for one slice."""
    return binned_stats_many(ref_counts, cur_counts, bins, min_samples, psi_groups)[0]

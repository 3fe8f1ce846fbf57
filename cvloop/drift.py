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
  mass of one bin on each side; Wasserstein uses bin centres (error at most half a bin
  width); PSI uses the rollup's fixed bins instead of Sturges bins. The tolerance between
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
def ks_2samp(ref_sorted: np.ndarray, cur_sorted: np.ndarray) -> tuple[float, float]:
    """Two-sided two-sample KS on *sorted* arrays: ``(statistic, p-value)``.

    Same statistic and p-value as ``scipy.stats.ks_2samp(method="auto")``.
    """
    from scipy.stats import distributions

    n1, n2 = len(ref_sorted), len(cur_sorted)
    if max(n1, n2) <= 10_000:
        from scipy.stats import ks_2samp as _scipy_ks

        res = _scipy_ks(ref_sorted, cur_sorted)
        return float(res.statistic), float(res.pvalue)
    data_all = np.concatenate([ref_sorted, cur_sorted])
    cdf1 = np.searchsorted(ref_sorted, data_all, side="right") / n1
    cdf2 = np.searchsorted(cur_sorted, data_all, side="right") / n2
    diff = cdf1 - cdf2
    d = float(max(np.clip(-diff.min(), 0, 1), diff.max()))
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)
    p = float(np.clip(distributions.kstwo.sf(d, np.round(en)), 0, 1))
    return d, p


def wasserstein_sorted(u: np.ndarray, v: np.ndarray) -> float:
    """First Wasserstein distance of two *sorted* samples (scipy's CDF-distance method)."""
    all_values = np.concatenate((u, v))
    all_values.sort(kind="mergesort")
    deltas = np.diff(all_values)
    u_cdf = np.searchsorted(u, all_values[:-1], "right") / u.size
    v_cdf = np.searchsorted(v, all_values[:-1], "right") / v.size
    return float(np.sum(np.multiply(np.abs(u_cdf - v_cdf), deltas)))


def psi_evidently(ref: np.ndarray, cur: np.ndarray) -> float:
    """PSI over Evidently's bins (Sturges edges of both windows; zero bins filled)."""
    if len(np.unique(ref)) <= 20:
        keys = np.union1d(np.unique(ref), np.unique(cur))
        ref_p = np.array([np.count_nonzero(ref == k) for k in keys]) / len(ref)
        cur_p = np.array([np.count_nonzero(cur == k) for k in keys]) / len(cur)
    else:
        edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
        ref_p = np.histogram(ref, edges)[0] / len(ref)
        cur_p = np.histogram(cur, edges)[0] / len(cur)
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
    """KS, PSI and normed Wasserstein of two raw samples (one sort per side, shared)."""
    ref = np.asarray(ref, dtype=np.float64)
    cur = np.asarray(cur, dtype=np.float64)
    if len(ref) < min_samples or len(cur) < min_samples:
        return DriftStats.not_enough(len(ref), len(cur))
    rs, cs = np.sort(ref), np.sort(cur)
    d, p = ks_2samp(rs, cs)
    norm = max(float(np.std(ref)), 0.001)
    w = wasserstein_sorted(rs, cs) / norm
    return DriftStats(d, p, psi_evidently(rs, cs), w, len(ref), len(cur))


# ---- binned path ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Bins:
    """Fixed bin edges of one signal; values outside fall into the first/last bin."""

    name: str
    edges: np.ndarray

    @property
    def centres(self) -> np.ndarray:
        return (self.edges[:-1] + self.edges[1:]) / 2

    def index(self, values: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(self.edges, values, side="right") - 1
        return np.clip(idx, 0, len(self.edges) - 2)

    def counts(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.index(values), minlength=len(self.edges) - 1).astype(np.int64)


def signal_bins(
    confidence_bins: int = 200, size_bins: int = 200, volume_max: int = 100
) -> dict[str, Bins]:
    """The rollup bins: confidence linear on [0, 1]; box area (fraction of the frame)
    log-spaced on [1e-5, 1]; detection volume one bin per count 0..volume_max."""
    return {
        "confidence": Bins("confidence", np.linspace(0.0, 1.0, confidence_bins + 1)),
        "size": Bins("size", np.concatenate([[0.0], np.logspace(-5, 0, size_bins)])),
        "volume": Bins("volume", np.arange(0, volume_max + 2, dtype=np.float64) - 0.5),
    }


def coarsen(counts: np.ndarray, groups: int) -> np.ndarray:
    """Merge adjacent bins into ``groups`` bins (PSI is unstable over many sparse bins)."""
    size = int(math.ceil(len(counts) / groups))
    pad = size * groups - len(counts)
    return np.pad(counts, (0, pad)).reshape(groups, size).sum(axis=1)


def binned_stats(
    ref_counts: np.ndarray,
    cur_counts: np.ndarray,
    bins: Bins,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    psi_groups: int = 10,
) -> DriftStats:
    """KS, PSI and normed Wasserstein from two histograms over the same bins.

    PSI is computed over ``psi_groups`` merged bins (about the ~10 Sturges bins of the exact
    path at these sample sizes); KS and Wasserstein use the full resolution.
    """
    from scipy.stats import distributions

    ref_counts = np.asarray(ref_counts, dtype=np.float64)
    cur_counts = np.asarray(cur_counts, dtype=np.float64)
    n1, n2 = int(ref_counts.sum()), int(cur_counts.sum())
    if n1 < min_samples or n2 < min_samples:
        return DriftStats.not_enough(n1, n2)
    c1 = np.cumsum(ref_counts) / n1
    c2 = np.cumsum(cur_counts) / n2
    d = float(np.max(np.abs(c1 - c2)))
    m, n = sorted([float(n1), float(n2)], reverse=True)
    p = float(np.clip(distributions.kstwo.sf(d, np.round(m * n / (m + n))), 0, 1))
    x = bins.centres
    widths = np.diff(x)
    w = float(np.sum(np.abs(c1[:-1] - c2[:-1]) * widths))
    mean = np.sum(ref_counts * x) / n1
    std = math.sqrt(max(float(np.sum(ref_counts * (x - mean) ** 2) / n1), 0.0))
    w /= max(std, 0.001)
    ref_p = _fill_zeros(coarsen(ref_counts, psi_groups) / n1)
    cur_p = _fill_zeros(coarsen(cur_counts, psi_groups) / n2)
    return DriftStats(d, p, _psi(ref_p, cur_p), w, n1, n2)

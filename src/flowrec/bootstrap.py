"""Intervals over test samples (or generated samples): resampling weights, grouped totals, the
percentile bootstrap and the grouped jackknife (docs/method.md section 6).

Every statistic is computed from sample weights (flowrec.sample_metrics.metric_values): a (rows, n)
matrix says how often each sample counts in each row. Unit weights give the point value, bootstrap
multiplicities its resamples, leave-group-out weights (0 for the deleted group, 1 elsewhere) its
jackknife replicates, so that one piece of code defines the statistic for all three.

Bootstrap: a draw resamples the n samples with replacement. It is stored as a (draws, n) index matrix drawn once
from a seeded numpy Generator and turned into multiplicities W[b, i] = how often sample i is in draw b,
so that a statistic that sums per-sample values is W @ values for every draw at once. Statistics that
are not means of per-sample values (group shares, word entropy, coverage) are recomputed per draw from
the resampled per-sample counts (`grouped_totals`). The same (n, draws, seed) gives the same draws, so
two methods scored on the same samples are compared draw by draw (a paired bootstrap).
"""

from __future__ import annotations

import functools
import math

import numpy as np

# Entries (draws x pairs) handled at once by grouped_totals: bounds its memory to ~64 MB of float64.
_CHUNK_ENTRIES = 8_000_000


def index_matrix(n: int, draws: int, seed: int) -> np.ndarray:
    """(draws, n) int64: the resampled sample positions of every draw (seeded)."""
    if n < 1 or draws < 1:
        raise ValueError(f"bootstrap: need n >= 1 samples and draws >= 1, got n={n}, draws={draws}")
    return np.random.default_rng(seed).integers(0, n, size=(draws, n))


def multiplicities(index: np.ndarray, n: int) -> np.ndarray:
    """(draws, n) float64: how often each sample occurs in each draw of an index matrix."""
    draws = index.shape[0]
    flat = (index + (np.arange(draws) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=draws * n).reshape(draws, n).astype(np.float64)


def resample_weights(n: int, draws: int, seed: int) -> np.ndarray:
    """(draws, n) multiplicities of `draws` seeded resamples of n samples."""
    return multiplicities(index_matrix(n, draws, seed), n)


def percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """The central `level` percentile interval of a statistic's bootstrap draws (1-d)."""
    if not 0 < level < 1:
        raise ValueError(f"bootstrap: confidence level must lie in (0, 1), got {level}")
    lo, hi = np.quantile(np.asarray(values, dtype=np.float64), [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def jackknife_labels(n: int, groups: int, seed: int) -> np.ndarray:
    """(n,) int64: the jackknife group of every sample, min(groups, n) groups whose sizes differ by at
    most one. A seeded permutation rather than contiguous blocks, since sample order (test rows) may
    follow users or time; with groups >= n every sample is its own group (delete-one)."""
    if n < 2 or groups < 2:
        raise ValueError(f"jackknife: need n >= 2 samples and >= 2 groups, got n={n}, groups={groups}")
    return np.random.default_rng(seed).permutation(n) % min(groups, n)


def leave_group_out_weights(labels: np.ndarray) -> np.ndarray:
    """(G, n) float64: row g weighs every sample 1 except those of group g (0); a jackknife replicate
    is the statistic under one row."""
    labels = np.asarray(labels, dtype=np.int64)
    return (labels[None, :] != np.arange(labels.max() + 1)[:, None]).astype(np.float64)


@functools.lru_cache(maxsize=256)  # the tables ask for the same (level, groups) for every metric
def t_quantile(p: float, df: int) -> float:
    """The p-quantile (p > 0.5) of Student's t with integer df > 0, by bisection on its exact CDF.

    The report environment has no scipy; for integer df the CDF is a finite trigonometric sum
    (Abramowitz and Stegun 26.7.3-4): with u = atan(t / sqrt(df)), P(|T| <= t) is
    sin u * (1 + c^2/2 + 1*3/(2*4) c^4 + ...) for even df and (2/pi)(u + sin u * (c + 2/3 c^3 + ...))
    for odd df, c = cos u, the sums running to c^(df-2).
    """
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"t_quantile: need 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    target = 2 * p - 1  # P(|T| <= t)

    def central(t: float) -> float:
        u = math.atan(t / math.sqrt(df))
        c, s = math.cos(u), math.sin(u)
        if df % 2 == 0:
            term, total = 1.0, 1.0
            for j in range(2, df - 1, 2):  # exponents 2, 4, ..., df - 2
                term *= (j - 1) / j * c * c
                total += term
            return s * total
        if df == 1:
            return 2 * u / math.pi
        term, total = c, c
        for j in range(3, df - 1, 2):  # exponents 3, 5, ..., df - 2
            term *= (j - 1) / j * c * c
            total += term
        return 2 / math.pi * (u + s * total)

    lo, hi = 0.0, 1.0
    while central(hi) < target:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if hi - lo <= 1e-12 * hi:
            break
        lo, hi = (mid, hi) if central(mid) < target else (lo, mid)
    return (lo + hi) / 2


def jackknife_interval(
    point: float, replicates: np.ndarray, level: float, bounds: tuple[float, float] = (-math.inf, math.inf)
) -> tuple[float, float]:
    """point +- t_(G-1) * se: the grouped-jackknife t interval of a statistic from its G leave-group-out
    replicates, se^2 = (G - 1) / G * sum_g (replicate_g - mean)^2, cut to `bounds`, the range the
    statistic can take (a divergence is >= 0, a share <= 1).

    Centred on the point value, so it contains it by construction: the interval is for the statistic
    at this number of samples (what another test set of the same size would give), not for its
    large-sample limit, so no bias correction moves the centre. The cut changes no coverage: the
    statistic's value, and its mean at this size, lie within its range.
    """
    if not 0 < level < 1:
        raise ValueError(f"jackknife: confidence level must lie in (0, 1), got {level}")
    replicates = np.asarray(replicates, dtype=np.float64)
    g = len(replicates)
    if g < 2:
        raise ValueError(f"jackknife: need >= 2 replicates, got {g}")
    # shifted by the first replicate (the variance does not change): replicates that are all equal give
    # exactly 0, not the rounding noise of their mean
    shifted = replicates - replicates[0]
    se = math.sqrt((g - 1) / g * float(((shifted - shifted.mean()) ** 2).sum()))
    half = t_quantile((1 + level) / 2, g - 1) * se
    return float(max(point - half, bounds[0])), float(min(point + half, bounds[1]))


def grouped_totals(
    weights: np.ndarray, owner: np.ndarray, key: np.ndarray, n_keys: int, counts: np.ndarray | None = None
) -> np.ndarray:
    """(draws, n_keys) float64: per draw, the total count of each key over the resampled samples.

    Entry e says that sample owner[e] holds key[e] (a word, a title) counts[e] times (default 1); a
    draw's total of key k is sum_e [key[e] == k] * weights[b, owner[e]] * counts[e]. Vectorised: the
    entries are sorted by key once and summed with np.add.reduceat, in chunks of draws.
    """
    owner = np.asarray(owner, dtype=np.int64)
    key = np.asarray(key, dtype=np.int64)
    counts = np.ones(len(key)) if counts is None else np.asarray(counts, dtype=np.float64)
    out = np.zeros((weights.shape[0], n_keys), dtype=np.float64)
    if len(key) == 0:
        return out
    order = np.argsort(key, kind="stable")
    owner, key, counts = owner[order], key[order], counts[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    chunk = max(1, _CHUNK_ENTRIES // len(key))
    for lo in range(0, weights.shape[0], chunk):
        part = weights[lo : lo + chunk][:, owner] * counts  # (chunk, entries)
        out[lo : lo + chunk, key[starts]] = np.add.reduceat(part, starts, axis=1)
    return out

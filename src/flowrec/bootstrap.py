"""Bootstrap over test samples (or generated samples): resampling weights, grouped totals, intervals.

A draw resamples the n samples with replacement. It is stored as a (draws, n) index matrix drawn once
from a seeded numpy Generator and turned into multiplicities W[b, i] = how often sample i is in draw b,
so that a statistic that sums per-sample values is W @ values for every draw at once. Statistics that
are not means of per-sample values (group shares, word entropy, coverage) are recomputed per draw from
the resampled per-sample counts (`grouped_totals`). The same (n, draws, seed) gives the same draws, so
two methods scored on the same samples are compared draw by draw (a paired bootstrap).
"""

from __future__ import annotations

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

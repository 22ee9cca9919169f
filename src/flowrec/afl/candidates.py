"""Candidate lists for the recommendation agent and judged pairs for user simulation (docs/method.md
section 9).

A candidate list holds the true next item once and `n - 1` negatives drawn uniformly without
replacement from the items that are neither in the user's history nor the target, in a seeded random
order (the target's position carries no signal). User simulation judges the true next item and negatives
drawn the same way.
"""

from __future__ import annotations

import numpy as np

from flowrec.sasrec import SplitArrays


def _negatives(rng: np.random.Generator, n_items: int, excluded: np.ndarray, k: int) -> np.ndarray:
    """k distinct item ids outside `excluded` (uniform, without replacement)."""
    pool = np.setdiff1d(np.arange(n_items), excluded, assume_unique=False)
    if len(pool) < k:
        raise ValueError(f"only {len(pool)} items outside the history and target; {k} negatives asked")
    return rng.choice(pool, size=k, replace=False)


def _excluded(split: SplitArrays, row: int) -> np.ndarray:
    return np.append(split.history[row, : split.length[row]], split.target[row])


def candidate_lists(split: SplitArrays, rows: np.ndarray, n_items: int, n: int, seed: int) -> np.ndarray:
    """(len(rows), n) item ids: each row's target once plus n - 1 negatives, shuffled (seeded)."""
    if n < 2:
        raise ValueError(f"afl.n_candidates must be at least 2, got {n}")
    rng = np.random.default_rng(seed)
    out = np.empty((len(rows), n), dtype=np.int64)
    for i, row in enumerate(rows):
        items = np.append(_negatives(rng, n_items, _excluded(split, row), n - 1), split.target[row])
        out[i] = rng.permutation(items)
    return out


def simulation_items(
    split: SplitArrays, rows: np.ndarray, n_items: int, max_ratio: int, seed: int
) -> np.ndarray:
    """(len(rows), 1 + max_ratio) item ids to judge: column 0 the true next item, then `max_ratio`
    negatives. The ratio 1:r uses columns 0..r, so the three ratios share their judgements."""
    rng = np.random.default_rng([seed, max_ratio])
    out = np.empty((len(rows), 1 + max_ratio), dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, 0] = split.target[row]
        out[i, 1:] = _negatives(rng, n_items, _excluded(split, row), max_ratio)
    return out


def choose_rows(n_rows: int, users: int | None, seed: int) -> np.ndarray:
    """A seeded subset of `users` test rows (sorted), or all rows for None."""
    if users is None or users >= n_rows:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=users, replace=False))

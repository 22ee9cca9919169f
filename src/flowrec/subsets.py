"""Seeded row subsets: which samples a budget-limited stage uses (tuning, decoding, scoring)."""

import numpy as np


def seeded_subset(n_rows: int, size: int | None, seed: int) -> np.ndarray:
    """Sorted row indices of a seeded random subset of `size` rows out of `n_rows`.

    All rows when `size` is None or not smaller than `n_rows`. The same (n_rows, size, seed) always
    gives the same rows, so the decoder and the metrics stage agree on which test samples count.
    """
    if size is None or size >= n_rows:
        return np.arange(n_rows, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_rows, size=size, replace=False)).astype(np.int64)

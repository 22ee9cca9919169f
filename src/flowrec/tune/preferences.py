"""Rejected titles of the preference samples (RQ3, docs/method.md section 10), drawn once, seeded.

Each training sample's chosen title is its target; its rejected titles are drawn from the catalogue's
titles other than the target:
  uniform     k titles uniformly without replacement (S-DPO, DMPO; published k = 3)
  popularity  one title with probability c(t) / sum of c over the other titles, c(t) the title's count
              in the training histories (RosePO); titles never in a history are never drawn
Vectorised over the samples: no Python loop per sample.
"""

import numpy as np

SAMPLERS = ("uniform", "popularity")


def uniform_negatives(targets: np.ndarray, n_titles: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """(n, k) distinct title ids per row, uniform without replacement over [0, n_titles) minus the row's
    target: each draw is uniform over the ids not yet excluded, mapped past the excluded ones in order."""
    targets = np.asarray(targets, dtype=np.int64)
    if k > n_titles - 1:
        raise ValueError(f"align.negatives: {k} rejected titles need more than the {n_titles} titles")
    excluded = targets[:, None]  # (n, j + 1), kept sorted per row
    picks = np.empty((len(targets), k), dtype=np.int64)
    for j in range(k):  # k is a handful (published: 3): a loop over draws, not over samples
        u = rng.integers(0, n_titles - 1 - j, size=len(targets))
        for column in range(excluded.shape[1]):  # the u-th id of the complement of the sorted exclusions
            u = u + (u >= excluded[:, column])
        picks[:, j] = u
        excluded = np.sort(np.concatenate([excluded, u[:, None]], axis=1), axis=1)
    return picks


def popularity_negatives(targets: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n, 1) title ids, row i drawn with probability counts[t] / (sum(counts) - counts[target_i]) over
    t != target_i (inverse-CDF sampling on the cumulative counts with the target's interval skipped)."""
    targets = np.asarray(targets, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.float64)
    if (counts < 0).any():
        raise ValueError("popularity negatives: title counts must be non-negative")
    rest = counts.sum() - counts[targets]  # (n,)
    if (rest <= 0).any():
        raise ValueError("popularity negatives: no title other than the target has a training-history count")
    cum = np.cumsum(counts)
    start_of_target = cum[targets] - counts[targets]
    u = rng.random(len(targets)) * rest
    u = u + counts[targets] * (u >= start_of_target)  # jump over the target's own interval
    picks = np.searchsorted(cum, u, side="right")
    return np.minimum(picks, len(counts) - 1)[:, None]


def draw_negatives(
    targets: np.ndarray, n_titles: int, sampler: str, k: int, seed: int, counts: np.ndarray | None = None
) -> np.ndarray:
    """(n, k) rejected title ids of the samples whose target titles are `targets` (n,)."""
    rng = np.random.default_rng(seed)
    if sampler == "uniform":
        return uniform_negatives(targets, n_titles, k, rng)
    if sampler == "popularity":
        if k != 1 or counts is None:
            raise ValueError("popularity negatives: one rejected title per sample, from the title counts")
        return popularity_negatives(targets, counts, rng)
    raise ValueError(f"align sampler {sampler!r}; expected one of {SAMPLERS}")

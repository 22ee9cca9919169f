"""Reference rows of the results table: Random and MostPop (docs/method.md section 5).

Both rank titles of the catalogue (the distinct item titles), so that their rows show what a hit is
worth at a given scale. Random: for every test sample `n` distinct titles drawn uniformly without
replacement (seeded). MostPop: the same list for every sample, the `n` titles most frequent in the
train split's histories (the frequency of the popularity groups and of R(i)), ties by first appearance
in those histories as in flowrec.groups.popularity_groups. Lists are written in the prediction format
(docs/formats.md); a title names its smallest item id.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from flowrec.groups import title_first_seen, title_history_counts

REFERENCE_METHODS = ("random", "mostpop")
# Random keys drawn at once by random_lists (rows x titles): bounds its memory to ~32 MB of float64.
_CHUNK_KEYS = 4_000_000


def catalogue(item_titles: pd.Series) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(title id of every item, distinct titles in order of first item id, smallest item id per title)."""
    item_title, titles = pd.factorize(item_titles.to_numpy(dtype=object))
    first_item = np.full(len(titles), len(item_title), dtype=np.int64)
    np.minimum.at(first_item, item_title, np.arange(len(item_title)))
    return item_title.astype(np.int64), list(titles), first_item


def random_lists(n_samples: int, n_titles: int, n: int, seed: int) -> np.ndarray:
    """(n_samples, min(n, n_titles)) title ids: each row distinct titles drawn uniformly (seeded)."""
    n = min(n, n_titles)
    rng = np.random.default_rng(seed)
    out = np.empty((n_samples, n), dtype=np.int64)
    rows = max(1, _CHUNK_KEYS // max(n_titles, 1))
    for lo in range(0, n_samples, rows):
        # the n smallest of i.i.d. uniform keys are a uniform draw of n distinct titles
        keys = rng.random((min(rows, n_samples - lo), n_titles))
        picked = np.argpartition(keys, n - 1, axis=1)[:, :n] if n < n_titles else np.argsort(keys, axis=1)
        order = np.argsort(np.take_along_axis(keys, picked, axis=1), axis=1)
        out[lo : lo + len(keys)] = np.take_along_axis(picked, order, axis=1)
    return out


def mostpop_list(frequency: np.ndarray, first_seen: np.ndarray, n: int) -> np.ndarray:
    """The n title ids of highest frequency (ties: first seen first)."""
    return np.lexsort((first_seen, -np.asarray(frequency)))[:n]


def reference_predictions(
    method: str, item_titles: pd.Series, train_histories, n_test: int, n: int, seed: int
) -> pa.Table:
    """Prediction table (docs/formats.md) of `method` for every test sample.

    Scores: Random 1 / n_titles (the uniform probability of each title); MostPop the title's share of
    all train-history occurrences.
    """
    item_title, titles, first_item = catalogue(item_titles)
    if method == "random":
        ids = random_lists(n_test, len(titles), n, seed)
        scores = np.full(ids.shape, 1.0 / len(titles))
    elif method == "mostpop":
        frequency = title_history_counts(train_histories, item_title, len(titles))
        if frequency.sum() == 0:
            raise ValueError("train histories are empty: MostPop has no popularity to rank by")
        top = mostpop_list(frequency, title_first_seen(train_histories, item_title, len(titles)), n)
        ids = np.broadcast_to(top, (n_test, len(top)))
        scores = np.broadcast_to(frequency[top] / frequency.sum(), ids.shape)
    else:
        raise ValueError(f"unknown reference method {method!r}; expected one of {REFERENCE_METHODS}")
    names = np.asarray(titles, dtype=object)
    return pa.table(
        {
            "sample": pa.array(np.arange(n_test, dtype=np.int64)),
            "titles": pa.array([list(r) for r in names[ids]], type=pa.list_(pa.string())),
            "item_ids": pa.array([list(r) for r in first_item[ids]], type=pa.list_(pa.int64())),
            "scores": pa.array(
                [list(r) for r in np.asarray(scores, dtype=np.float64)], type=pa.list_(pa.float64())
            ),
        }
    )

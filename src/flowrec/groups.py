"""Per-title values: counts in training histories, item rewards R(i), popularity groups.

R(i) (docs/method.md section 3) and the popularity groups (docs/method.md section 6) both start from
how often each title occurs in the histories of the training samples. Titles, not items: items sharing
a title share its count (the trie has one leaf per title).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def title_values(
    values: Mapping[str, float] | Sequence[float] | np.ndarray | None, names: list[str], what: str
) -> np.ndarray:
    """Non-negative float64 per title of `names`: from a mapping (missing: 0), an aligned sequence, or None (0)."""
    if values is None:
        return np.zeros(len(names), dtype=np.float64)
    if isinstance(values, Mapping):
        out = np.array([float(values.get(name, 0.0)) for name in names], dtype=np.float64)
    else:
        out = np.asarray(values, dtype=np.float64)
        if out.shape != (len(names),):
            raise ValueError(f"{what}: shape {out.shape}, expected ({len(names)},) (one per unique title)")
    if not np.all(np.isfinite(out)) or np.any(out < 0):
        raise ValueError(f"{what}: every value must be finite and non-negative")
    return out


def _flat_items(train_histories) -> np.ndarray:
    """All item ids of all histories, as one int64 array (Arrow list column, pandas Series or lists)."""
    if isinstance(train_histories, pa.ChunkedArray | pa.ListArray | pa.LargeListArray):
        return pc.list_flatten(train_histories).to_numpy(zero_copy_only=False).astype(np.int64)
    rows = list(train_histories)
    if not rows:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.asarray(h, dtype=np.int64).reshape(-1) for h in rows])


def _history_titles(train_histories, item_title: np.ndarray) -> np.ndarray:
    """Title id of every history entry, in split order (samples in file order, each history oldest first)."""
    items = _flat_items(train_histories)
    if len(items) and (items.min() < 0 or items.max() >= len(item_title)):
        raise ValueError(
            f"train histories: item ids must lie in [0, {len(item_title)}), got {items.min()}..{items.max()}"
        )
    return np.asarray(item_title, dtype=np.int64)[items]


def title_history_counts(train_histories, item_title: np.ndarray, n_titles: int) -> np.ndarray:
    """(n_titles,) int64: occurrences of each title in the training histories."""
    return np.bincount(_history_titles(train_histories, item_title), minlength=n_titles).astype(np.int64)


def title_first_seen(train_histories, item_title: np.ndarray, n_titles: int) -> np.ndarray:
    """(n_titles,) int64: position of each title's first occurrence in the training histories read in
    split order (samples in file order, each history oldest first); titles never seen get the number of
    history entries (after every seen title). The tie-break of popularity_groups."""
    titles = _history_titles(train_histories, item_title)
    first = np.full(n_titles, len(titles), dtype=np.int64)
    seen, index = np.unique(titles, return_index=True)  # index: first position of each distinct title
    first[seen] = index
    return first


def title_rewards_from_histories(train_histories, item_title: np.ndarray, n_titles: int) -> np.ndarray:
    """R(i) (float64, n_titles): how often title i occurs in the train split's histories
    (docs/method.md section 3)."""
    return title_history_counts(train_histories, item_title, n_titles).astype(np.float64)


def check_group_count(title_frequency: Sequence[int] | np.ndarray, n_groups: int) -> None:
    """Raise ValueError naming trie.n_groups unless every one of the n_groups popularity groups gets a
    title seen in training histories (groups are cut from the seen titles; unseen ones only join the last)."""
    freq = np.asarray(title_frequency)
    seen = int(np.count_nonzero(freq > 0))
    if n_groups < 1:
        raise ValueError(f"trie.n_groups: expected >= 1, got {n_groups}")
    if n_groups > seen:
        raise ValueError(
            f"trie.n_groups: {n_groups} popularity groups, but only {seen} of the catalogue's {len(freq)} "
            f"titles occur in the training histories, so {n_groups - seen} groups would hold no title; "
            f"set trie.n_groups to at most {seen}"
        )


def popularity_groups(
    title_frequency: Sequence[int] | np.ndarray, n_groups: int, first_seen: Sequence[int] | np.ndarray
) -> np.ndarray:
    """(n_titles,) int64 group per title: 0 = most popular ... n_groups - 1 = least popular.

    Titles seen in training histories are sorted by frequency (descending) and cut into `n_groups`
    groups of equal size (np.array_split: sizes differ by at most one, larger first). Titles of equal
    frequency keep the order of their first appearance in the training histories (`first_seen`, from
    title_first_seen): the published preprocessing counts titles in a dict filled in history order and
    sorts it stably, so this reproduces its groups (docs/method.md section 6). Every title absent from
    the training histories (frequency 0) goes to the last group, even when that makes it larger than the
    others. A group count above the number of seen titles is refused (check_group_count): some groups
    would hold no title, and the fairness metrics over them would mean nothing.
    """
    freq = np.asarray(title_frequency)
    first = np.asarray(first_seen)
    if freq.ndim != 1 or np.any(freq < 0):
        raise ValueError("title_frequency: expected a 1-d array of non-negative counts")
    if first.shape != freq.shape:
        raise ValueError(f"first_seen: shape {first.shape}, expected {freq.shape} (one per title)")
    check_group_count(freq, n_groups)
    groups = np.full(len(freq), n_groups - 1, dtype=np.int64)
    seen = np.flatnonzero(freq > 0)
    ranked = seen[np.lexsort((first[seen], -freq[seen]))]  # last key is primary: frequency, then first seen
    for g, members in enumerate(np.array_split(ranked, n_groups)):
        groups[members] = g
    return groups


def group_shares(
    title_frequency: Sequence[int] | np.ndarray, groups: np.ndarray, n_groups: int
) -> np.ndarray:
    """(n_groups,) float64: each group's share of all training-history interactions (sums to 1)."""
    freq = np.asarray(title_frequency, dtype=np.float64)
    total = freq.sum()
    if total <= 0:
        raise ValueError("title_frequency: all zero; group shares are undefined")
    return np.bincount(np.asarray(groups, dtype=np.int64), weights=freq, minlength=n_groups) / total


def groups_table(titles: Sequence[str], title_frequency: np.ndarray, groups: np.ndarray) -> pa.Table:
    """results/{dataset}/trie/groups.parquet (docs/formats.md): title, title_id, frequency, group."""
    return pa.table(
        {
            "title": pa.array(list(titles), type=pa.string()),
            "title_id": pa.array(np.arange(len(titles), dtype=np.int64)),
            "frequency": pa.array(np.asarray(title_frequency, dtype=np.int64)),
            "group": pa.array(np.asarray(groups, dtype=np.int64)),
        }
    )

"""The prediction table of docs/formats.md: per test sample, the decoded titles, the item each stands
for, and their scores, best first."""

import numpy as np
import pyarrow as pa

from flowrec.decode.beams import Ranked
from flowrec.trie import Trie


def smallest_item_of_title(trie: Trie) -> np.ndarray:
    """(n_titles,) the smallest item id with each title: the item a decoded title stands for
    (several items may share a title; docs/formats.md, prediction format)."""
    item_title = np.asarray(trie.item_title, dtype=np.int64)
    out = np.full(len(trie.titles), np.iinfo(np.int64).max, dtype=np.int64)
    items = np.flatnonzero(item_title >= 0)
    np.minimum.at(out, item_title[items], items)
    return np.where(out == np.iinfo(np.int64).max, -1, out)


def predictions_table(samples: np.ndarray, ranked: list[Ranked], trie: Trie) -> pa.Table:
    """The prediction format of docs/formats.md: sample, titles, item_ids, scores (lists, best first)."""
    if len(samples) != len(ranked):
        raise ValueError(f"predictions_table: {len(samples)} samples but {len(ranked)} ranked lists")
    item_of = smallest_item_of_title(trie)
    title_ids = [[t for t, _ in row] for row in ranked]
    return pa.table(
        {
            "sample": pa.array(np.asarray(samples, dtype=np.int64), type=pa.int64()),
            "titles": pa.array(
                [[trie.titles[t] for t in row] for row in title_ids], type=pa.list_(pa.string())
            ),
            "item_ids": pa.array([item_of[row].tolist() for row in title_ids], type=pa.list_(pa.int64())),
            "scores": pa.array([[s for _, s in row] for row in ranked], type=pa.list_(pa.float64())),
        }
    )

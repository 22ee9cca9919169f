"""Titles, the unit of generation and of the title-level metrics (several items may share one title).

unique_titles numbers the distinct titles in order of first item id (the trie's title ids);
title_sequences checks their token paths; title_scores turns per-item scores into per-title scores
with an explicit reduction: "max" (a title scores as its best item: SASRec's title ranking, Flower's
p_ui per sampled title) or "sum" (the probability mass of all its items: D3's assistant).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch


def unique_titles(item_titles: Sequence[str]) -> list[str]:
    """Distinct titles in order of first appearance by item id (the order `Trie.build` inputs use)."""
    return list(dict.fromkeys(item_titles))


def title_sequences(title_token_ids, names: list[str]) -> list[tuple[int, ...]]:
    """Token ids of each title of `names`: from a function title -> ids, a mapping, or an aligned list;
    checked non-empty and non-negative (the trie's paths)."""
    if isinstance(title_token_ids, Mapping):
        seqs = [tuple(int(t) for t in title_token_ids[name]) for name in names]
    elif callable(title_token_ids):
        seqs = [tuple(int(t) for t in title_token_ids(name)) for name in names]
    else:
        if len(title_token_ids) != len(names):
            raise ValueError(f"title_token_ids: {len(title_token_ids)} lists for {len(names)} unique titles")
        seqs = [tuple(int(t) for t in ids) for ids in title_token_ids]
    for name, seq in zip(names, seqs, strict=True):
        if not seq or min(seq) < 0:
            raise ValueError(f"title {name!r}: token ids must be non-empty and non-negative, got {list(seq)}")
    return seqs


def title_scores(
    item_scores: torch.Tensor | np.ndarray,
    item_title: torch.Tensor | np.ndarray | Sequence[int],
    n_titles: int,
    reduce: Literal["max", "sum"],
    empty: float = 0.0,
) -> torch.Tensor:
    """Per-title scores (N, n_titles) from per-item scores (N, n_items), in the scores' dtype.

    item_title (n_items,): title id of each item (-1: the item has no title and is left out).
    reduce "max": the best item's score; "sum": the sum over the title's items. Titles without an
    item get `empty`.
    """
    scores = torch.as_tensor(item_scores)
    item_title = torch.as_tensor(np.asarray(item_title, dtype=np.int64), device=scores.device)
    if scores.ndim != 2 or scores.shape[1] != item_title.shape[0]:
        raise ValueError(
            f"title_scores: item scores of shape {tuple(scores.shape)} do not match {item_title.shape[0]} "
            "items (expected (n_samples, n_items))"
        )
    keep = item_title >= 0
    if not bool(keep.all()):
        scores, item_title = scores[:, keep], item_title[keep]
    out = scores.new_full((scores.shape[0], n_titles), empty)
    if reduce == "sum":
        return out.index_add_(1, item_title, scores)
    if reduce == "max":
        index = item_title.expand_as(scores)
        return out.scatter_reduce_(1, index, scores, reduce="amax", include_self=False)
    raise ValueError(f"title_scores: unknown reduction {reduce!r}; expected 'max' or 'sum'")

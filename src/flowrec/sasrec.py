"""SASRec (Kang & McAuley 2018) outputs: settings, split arrays, p_ui export, metrics, baseline top-10.

The model itself is RecBole's SASRec, trained in `flowrec.sasrec_recbole`; this module holds everything
that does not need RecBole, so it can be tested on its own. The model is seen only through a
`ScoreFn`: item sequences in our item ids -> logits over all items in our item-id order (column j is
item_id j). From these logits come (docs/method.md sections 4-5):
- p_ui: one softmax over all items per sample, stored as float16 rows (Flower's personalised rewards,
  D3's assistant scores);
- HR@K / NDCG@K of the target item, from the full ranking over all items (no negative sampling);
- the SASRec baseline's top-10 titles per test sample (prediction format of docs/formats.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from flowrec.io import atomic_path, read_items
from flowrec.titles import title_scores, unique_titles

# (B, L) item ids (ours, right-padded with -1), (B,) lengths -> (B, n_items) logits in item-id order.
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

METRIC_KS = (5, 10)


@dataclass(frozen=True)
class SasrecSettings:
    """The `sasrec:` config block; build it with flowrec.settings.settings_from_block(.., "sasrec")
    (config/schema.yaml holds the defaults and the help text)."""

    loss: str  # CE (softmax over all items) or BCE (one sampled negative, the paper's)
    hidden_size: int  # embedding and hidden size
    n_layers: int  # transformer layers
    n_heads: int  # attention heads
    inner_size: int  # feed-forward size
    dropout: float  # hidden and attention dropout
    learning_rate: float  # Adam learning rate
    weight_decay: float  # Adam weight decay
    batch_size: int  # training batch size
    epochs: int  # maximum epochs
    patience: int  # stop after this many epochs without a better valid NDCG@10
    seed: int  # training seed

    def __post_init__(self) -> None:
        if self.loss not in ("CE", "BCE"):
            raise ValueError(f"sasrec.loss: expected CE or BCE, got {self.loss!r}")
        if self.hidden_size % self.n_heads:
            raise ValueError(
                f"sasrec.hidden_size ({self.hidden_size}) must be a multiple of n_heads ({self.n_heads})"
            )


@dataclass(frozen=True)
class SplitArrays:
    """One split as arrays: row i = sample i of the split's Parquet file."""

    history: np.ndarray  # (n, L) int64 item ids, oldest first, right-padded with -1
    length: np.ndarray  # (n,) int64 history lengths (>= 1)
    target: np.ndarray  # (n,) int64 target item ids

    def __len__(self) -> int:
        return len(self.target)


def split_arrays(table: pa.Table, n_items: int, source: str = "split") -> SplitArrays:
    """Turn a canonical split table (`history` list<int64>, `target` int64) into padded arrays.

    `source` names the file in error messages. Histories must be non-empty and every id in 0..n_items-1.
    """
    for column in ("history", "target"):
        if column not in table.column_names:
            raise ValueError(f"{source}: missing column {column!r} (docs/formats.md)")
    history = table.column("history").combine_chunks()
    lengths = pc.list_value_length(history).to_numpy(zero_copy_only=False).astype(np.int64)
    target = table.column("target").to_numpy().astype(np.int64)
    if len(lengths) and lengths.min() < 1:
        row = int(np.argmin(lengths))
        raise ValueError(f"{source}: row {row} has an empty history; SASRec needs at least one item")
    values = pc.list_flatten(history).to_numpy().astype(np.int64)
    for name, ids in (("history", values), ("target", target)):
        bad = np.flatnonzero((ids < 0) | (ids >= n_items))
        if len(bad):
            raise ValueError(f"{source}: {name} holds item id {ids[bad[0]]} outside 0..{n_items - 1}")
    width = int(lengths.max()) if len(lengths) else 1
    padded = np.full((len(lengths), width), -1, dtype=np.int64)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    cols = np.arange(len(values)) - np.repeat(starts, lengths)
    padded[rows, cols] = values
    return SplitArrays(history=padded, length=lengths, target=target)


def read_split(path: str | Path, n_items: int) -> SplitArrays:
    return split_arrays(pq.read_table(path, columns=["history", "target"]), n_items, source=str(path))


def target_ranks(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0-based rank of each row's target among all columns: how many score strictly higher. (B,)"""
    target_score = logits.gather(1, target[:, None])  # (B, 1)
    return (logits > target_score).sum(dim=1)


def ranking_metrics(ranks: np.ndarray, ks: tuple[int, ...] = METRIC_KS) -> dict[str, float]:
    """HR@K = share of ranks < K; NDCG@K = mean of 1/log2(rank + 2) over ranks < K (one target)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out: dict[str, float] = {}
    for k in ks:
        hit = ranks < k
        out[f"HR@{k}"] = float(hit.mean()) if len(ranks) else 0.0
        out[f"NDCG@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean()) if len(ranks) else 0.0
    return out


def _batches(n: int, batch_size: int) -> list[slice]:
    return [slice(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


@torch.no_grad()
def split_ranks(score_fn: ScoreFn, split: SplitArrays, batch_size: int = 1024) -> np.ndarray:
    """Rank of every sample's target under full ranking over all items (no p_ui written). (n,)"""
    ranks = np.empty(len(split), dtype=np.int64)
    for batch in _batches(len(split), batch_size):
        logits = score_fn(torch.from_numpy(split.history[batch]), torch.from_numpy(split.length[batch]))
        ranks[batch] = target_ranks(logits.float(), torch.from_numpy(split.target[batch])).numpy()
    return ranks


@torch.no_grad()
def export_p_ui(
    score_fn: ScoreFn, split: SplitArrays, n_items: int, path: str | Path, batch_size: int = 1024
) -> np.ndarray:
    """Write p_ui (n, n_items) float16 softmax rows to `path` in batches; return the targets' ranks.

    The rows go through a memory map, so memory stays at one batch of logits whatever the split size.
    Ranks come from the float32 logits (fp16 would create ties among the tail items).
    """
    ranks = np.empty(len(split), dtype=np.int64)
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(split), n_items))
        for batch in tqdm(_batches(len(split), batch_size), desc=f"p_ui {Path(path).name}", leave=False):
            logits = score_fn(torch.from_numpy(split.history[batch]), torch.from_numpy(split.length[batch]))
            logits = logits.float()
            out[batch] = torch.softmax(logits, dim=1).numpy().astype(np.float16)
            ranks[batch] = target_ranks(logits, torch.from_numpy(split.target[batch])).numpy()
        out.flush()
        del out
    return ranks


@dataclass(frozen=True)
class TitleIndex:
    """Distinct titles of the items: generation and title-level metrics work on titles."""

    titles: list[str]  # distinct titles, in order of first item id
    item_title: np.ndarray  # (n_items,) title index of each item id
    title_item: np.ndarray  # (n_titles,) the smallest item id with each title (docs/formats.md)

    @classmethod
    def read(cls, items_path: str | Path) -> TitleIndex:
        """From items.parquet (flowrec.io.read_items: sorted by item_id, checked to be 0..N-1)."""
        return cls.from_titles(read_items(items_path, columns=["item_id", "title"])["title"].tolist())

    @classmethod
    def from_titles(cls, item_titles: Sequence[str]) -> TitleIndex:
        """From the title of every item id; titles are numbered by their smallest item id, not by string."""
        titles = unique_titles(item_titles)
        title_id = {title: i for i, title in enumerate(titles)}
        item_title = np.fromiter((title_id[t] for t in item_titles), dtype=np.int64, count=len(item_titles))
        # Title ids follow the first item id, so each title's first occurrence is its smallest item id.
        _, title_item = np.unique(item_title, return_index=True)
        return cls(titles=titles, item_title=item_title, title_item=title_item.astype(np.int64))


@torch.no_grad()
def top_titles(
    score_fn: ScoreFn, split: SplitArrays, index: TitleIndex, k: int = 10, batch_size: int = 1024
) -> tuple[pa.Table, np.ndarray]:
    """SASRec baseline predictions: the top-k distinct titles of every sample (prediction format).

    A title is scored by its best item, so duplicate titles collapse to one entry and the list is filled
    to k from the next titles. Returns the table and the target titles' 0-based ranks (title level).
    """
    k = min(k, len(index.titles))
    target_title = torch.from_numpy(index.item_title[split.target])
    top_scores = np.empty((len(split), k), dtype=np.float64)
    top_ids = np.empty((len(split), k), dtype=np.int64)
    ranks = np.empty(len(split), dtype=np.int64)
    for batch in tqdm(_batches(len(split), batch_size), desc="top titles", leave=False):
        logits = score_fn(torch.from_numpy(split.history[batch]), torch.from_numpy(split.length[batch]))
        # A title scores as its best item; titles without an item (none here) would score -1.
        probs = torch.softmax(logits.float(), dim=1)
        scores = title_scores(probs, index.item_title, len(index.titles), reduce="max", empty=-1.0)
        values, ids = scores.topk(k, dim=1)  # sorted, best first
        top_scores[batch], top_ids[batch] = values.numpy(), ids.numpy()
        ranks[batch] = target_ranks(scores, target_title[batch]).numpy()
    titles = np.asarray(index.titles, dtype=object)
    table = pa.table(
        {
            "sample": pa.array(np.arange(len(split), dtype=np.int64)),
            "titles": pa.array(titles[top_ids].tolist(), type=pa.list_(pa.string())),
            "item_ids": pa.array(index.title_item[top_ids].tolist(), type=pa.list_(pa.int64())),
            "scores": pa.array(top_scores.tolist(), type=pa.list_(pa.float64())),
        }
    )
    return table, ranks

"""The trie's arrays: built from the titles in one pass, written to and read from trie.npz.

flowrec.trie.Trie holds these arrays and answers queries on them; this module makes them. Titles are
sorted by their token ids and inserted in that order, each adding nodes only beyond its common prefix
with the previous title, which numbers the nodes in pre-order (the numbering the Trie's docstring
relies on). trie.npz holds every array, the titles as UTF-8 bytes plus offsets (no pickle), and the
flows for readers without flowrec (docs/formats.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flowrec.groups import title_values
from flowrec.io import atomic_path
from flowrec.titles import title_sequences, unique_titles

FORMAT_VERSION = 1
# Arrays saved in trie.npz (with the titles and the flows)
ARRAY_FIELDS = (
    "child_ptr child_token child_node parent node_token depth node_title leaf_start leaf_end "
    "title_ptr title_tokens title_reward item_title"
).split()


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def build_arrays(
    item_titles: Sequence[str],
    title_token_ids: Callable[[str], Sequence[int]] | Mapping[str, Sequence[int]] | Sequence[Sequence[int]],
    title_rewards: Mapping[str, float] | Sequence[float] | np.ndarray | None = None,
) -> dict[str, Any]:
    """The fields of a Trie over the titles of items 0..n_items-1 (arguments: see Trie.build)."""
    names = unique_titles(item_titles)
    if not names:
        raise ValueError("item_titles: empty; a trie needs at least one title")
    seqs = title_sequences(title_token_ids, names)
    rewards = title_values(title_rewards, names, "title_rewards")

    order = sorted(range(len(names)), key=seqs.__getitem__)  # title id = rank in token order
    rank_of = np.empty(len(names), dtype=np.int64)
    rank_of[order] = np.arange(len(names))
    sorted_seqs = [seqs[i] for i in order]
    max_len = max(len(s) for s in sorted_seqs)

    # Insert titles in sorted order: each adds nodes only beyond its common prefix with the previous
    # title, which numbers the nodes in pre-order. One pass over the titles.
    path = np.zeros(max_len + 1, dtype=np.int64)  # node ids along the current title's path
    parents: list[np.ndarray] = [np.array([-1])]
    tokens: list[np.ndarray] = [np.array([-1])]
    depths: list[np.ndarray] = [np.array([0])]
    title_nodes: list[np.ndarray] = []
    n_nodes, prev = 1, ()
    for rank, seq in enumerate(sorted_seqs):
        lcp = _common_prefix(prev, seq)
        if lcp == len(prev) and prev:
            a, b = names[order[rank - 1]], names[order[rank]]
            what = "the same token ids as" if lcp == len(seq) else "a token-id path that is a prefix of"
            raise ValueError(f"title {a!r} has {what} title {b!r}; every path must end at its own leaf")
        new = np.arange(n_nodes, n_nodes + len(seq) - lcp)
        parents.append(np.concatenate([[path[lcp]], new[:-1]]))
        tokens.append(np.asarray(seq[lcp:], dtype=np.int64))
        depths.append(np.arange(lcp + 1, len(seq) + 1))
        path[lcp + 1 : len(seq) + 1] = new
        title_nodes.append(path[1 : len(seq) + 1].copy())
        n_nodes += len(new)
        prev = seq

    parent = np.concatenate(parents).astype(np.int64)
    node_token = np.concatenate(tokens).astype(np.int64)
    depth = np.concatenate(depths).astype(np.int64)
    lengths = np.fromiter((len(s) for s in sorted_seqs), dtype=np.int64, count=len(sorted_seqs))
    title_ptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    title_tokens = np.concatenate([np.asarray(s, dtype=np.int64) for s in sorted_seqs])
    flat_nodes = np.concatenate(title_nodes)
    flat_title = np.repeat(np.arange(len(names), dtype=np.int64), lengths)

    node_title = np.full(n_nodes, -1, dtype=np.int64)
    node_title[flat_nodes[title_ptr[1:] - 1]] = np.arange(len(names))
    leaf_start = np.zeros(n_nodes, dtype=np.int64)
    leaf_end = np.full(n_nodes, len(names), dtype=np.int64)  # root: every title
    leaf_start[1:] = len(names)
    leaf_end[1:] = 0
    np.minimum.at(leaf_start, flat_nodes, flat_title)
    np.maximum.at(leaf_end, flat_nodes, flat_title + 1)

    # Children CSR: nodes are pre-order, so children of a node appear by increasing id = token order.
    child_node = np.argsort(parent[1:], kind="stable").astype(np.int64) + 1
    child_token = node_token[child_node]
    child_ptr = np.concatenate([[0], np.cumsum(np.bincount(parent[1:], minlength=n_nodes))]).astype(np.int64)

    title_id_of_name = dict(zip(names, rank_of.tolist(), strict=True))
    item_title = np.fromiter(
        (title_id_of_name[t] for t in item_titles), dtype=np.int64, count=len(item_titles)
    )
    title_reward = np.empty(len(names), dtype=np.float64)
    title_reward[rank_of] = rewards
    return {
        "child_ptr": child_ptr,
        "child_token": child_token,
        "child_node": child_node,
        "parent": parent,
        "node_token": node_token,
        "depth": depth,
        "node_title": node_title,
        "leaf_start": leaf_start,
        "leaf_end": leaf_end,
        "titles": [names[i] for i in order],
        "title_ptr": title_ptr,
        "title_tokens": title_tokens,
        "title_reward": title_reward,
        "item_title": item_title,
    }


def save_arrays(
    path: str | Path, arrays: Mapping[str, np.ndarray], titles: list[str], flow: np.ndarray
) -> None:
    """Write the ARRAY_FIELDS of `arrays`, the titles (UTF-8 bytes + offsets: no pickle) and the flows."""
    encoded = [t.encode("utf-8") for t in titles]
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in encoded])]).astype(np.int64)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            format_version=np.int64(FORMAT_VERSION),
            titles_utf8=np.frombuffer(b"".join(encoded), dtype=np.uint8),
            titles_offsets=offsets,
            flow=flow,
            **{name: arrays[name] for name in ARRAY_FIELDS},
        )


def load_arrays(path: str | Path) -> dict[str, Any]:
    """The Trie fields stored in `path` (ARRAY_FIELDS and titles); refuses another format version."""
    with np.load(path, allow_pickle=False) as npz:
        version = int(npz["format_version"]) if "format_version" in npz else None
        if version != FORMAT_VERSION:
            raise ValueError(f"{path}: trie format version {version}, expected {FORMAT_VERSION}; rebuild it")
        missing = [n for n in (*ARRAY_FIELDS, "titles_utf8", "titles_offsets") if n not in npz]
        if missing:
            raise ValueError(f"{path}: missing arrays {missing}")
        raw, off = npz["titles_utf8"].tobytes(), npz["titles_offsets"]
        titles = [raw[off[i] : off[i + 1]].decode("utf-8") for i in range(len(off) - 1)]
        return {"titles": titles, **{name: npz[name] for name in ARRAY_FIELDS}}

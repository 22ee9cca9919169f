"""Prefix tree over tokenized titles: children, state flows, process rewards (method.md section 3).

One structure serves Flower's process rewards, the constrained decoder and D3's assistant scores.
Nodes are token prefixes; node 0 is the root (empty prefix). Every title's path is `prompts.title_ids`
(title, newline, EOS), so leaves are the nodes after EOS and a title that is a prefix of another one
("Back to the Future" / "Back to the Future II") still ends at its own leaf through its termination edge.

Numbering: titles are sorted by their token ids, nodes are numbered in pre-order (DFS, children by token
id), so the titles below any node form the contiguous range [leaf_start, leaf_end). Sums over subtrees
(flows, D3 assistant mass) are then differences of a cumulative sum, never a walk over the tree.

Flow (method.md section 3): F(leaf of title i) = R(i), F(node) = sum of its children's flows, so
F(node) = sum of R over the node's title range. Process reward R_p(s, a) = F(s + a) / F(s); stored as
log F(child) - log F(parent), -inf where F(child) = 0 (titles absent from train histories have no flow).
Granularity n (states every n tokens) is applied by the loss from `state_log_flows`, not stored here.
Popularity groups (method.md section 6) live in flowrec.groups.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from flowrec.groups import title_rewards_from_histories, title_values
from flowrec.io import atomic_path
from flowrec.titles import title_sequences, unique_titles

FORMAT_VERSION = 1
# Arrays saved in trie.npz (with the titles and, for readers without flowrec, the flows)
_ARRAYS = (
    "child_ptr child_token child_node parent node_token depth node_title leaf_start leaf_end "
    "title_ptr title_tokens title_reward item_title"
).split()


@dataclass(eq=False)
class Trie:
    """CSR prefix tree over title token ids (see the module docstring for numbering and flows)."""

    child_ptr: np.ndarray  # (n_nodes + 1,) children of node n: edges child_ptr[n]:child_ptr[n + 1]
    child_token: np.ndarray  # (n_edges,) token of each edge, ascending within a node
    child_node: np.ndarray  # (n_edges,) node the edge leads to
    parent: np.ndarray  # (n_nodes,) parent node, -1 at the root
    node_token: np.ndarray  # (n_nodes,) token of the edge into the node, -1 at the root
    depth: np.ndarray  # (n_nodes,) tokens in the prefix
    node_title: np.ndarray  # (n_nodes,) title id at leaves (after EOS), else -1
    leaf_start: np.ndarray  # (n_nodes,) first title id below the node
    leaf_end: np.ndarray  # (n_nodes,) one past the last title id below the node
    titles: list[str]  # title id -> title
    title_ptr: np.ndarray  # (n_titles + 1,) CSR over title_tokens
    title_tokens: np.ndarray  # token ids of each title (its path from the root)
    title_reward: np.ndarray  # (n_titles,) float64 R(i)
    item_title: np.ndarray  # (n_items,) title id of each item id
    _torch: dict = field(default_factory=dict, repr=False)

    # ---- construction -------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        item_titles: Sequence[str],
        title_token_ids: Callable[[str], Sequence[int]]
        | Mapping[str, Sequence[int]]
        | Sequence[Sequence[int]],
        title_rewards: Mapping[str, float] | Sequence[float] | np.ndarray | None = None,
    ) -> Trie:
        """Build the trie of the titles of items 0..n_items-1.

        title_token_ids: a function title -> ids (e.g. `functools.partial(prompts.title_ids, tok)`),
        a mapping title -> ids, or a list aligned with `unique_titles(item_titles)`.
        title_rewards: R per title (mapping, or aligned with `unique_titles`); None gives zeros (set
        them later with `with_rewards`, e.g. from `title_rewards_from_histories(.., trie.item_title, ..)`).
        """
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
        child_ptr = np.concatenate([[0], np.cumsum(np.bincount(parent[1:], minlength=n_nodes))]).astype(
            np.int64
        )

        title_id_of_name = dict(zip(names, rank_of.tolist(), strict=True))
        item_title = np.fromiter(
            (title_id_of_name[t] for t in item_titles), dtype=np.int64, count=len(item_titles)
        )
        title_reward = np.empty(len(names), dtype=np.float64)
        title_reward[rank_of] = rewards
        return cls(
            child_ptr=child_ptr,
            child_token=child_token,
            child_node=child_node,
            parent=parent,
            node_token=node_token,
            depth=depth,
            node_title=node_title,
            leaf_start=leaf_start,
            leaf_end=leaf_end,
            titles=[names[i] for i in order],
            title_ptr=title_ptr,
            title_tokens=title_tokens,
            title_reward=title_reward,
            item_title=item_title,
        )

    def with_rewards(self, title_reward: np.ndarray) -> Trie:
        """A copy with R(i) replaced (title-id order); flows and cached tensors follow."""
        reward = np.asarray(title_reward, dtype=np.float64)
        if reward.shape != (self.n_titles,) or not np.all(np.isfinite(reward)) or np.any(reward < 0):
            raise ValueError(
                f"title_reward: expected {self.n_titles} finite non-negative values, got shape {reward.shape}"
            )
        return replace(self, title_reward=reward, _torch={})

    # ---- sizes and numpy views ----------------------------------------------------------------------
    @property
    def n_nodes(self) -> int:
        return len(self.parent)

    @property
    def n_edges(self) -> int:
        return len(self.child_node)

    @property
    def n_titles(self) -> int:
        return len(self.titles)

    @property
    def n_items(self) -> int:
        return len(self.item_title)

    @property
    def max_token(self) -> int:
        return int(self.child_token.max()) if self.n_edges else -1

    def title_token_ids(self, title_id: int) -> list[int]:
        return self.title_tokens[self.title_ptr[title_id] : self.title_ptr[title_id + 1]].tolist()

    @functools.cached_property
    def title_index(self) -> dict[str, int]:
        """title -> title id."""
        return {t: i for i, t in enumerate(self.titles)}

    @functools.cached_property
    def flow(self) -> np.ndarray:
        """(n_nodes,) F(node) = sum of R over the titles below it (method.md section 3)."""
        csum = np.concatenate([[0.0], np.cumsum(self.title_reward)])
        return csum[self.leaf_end] - csum[self.leaf_start]

    @functools.cached_property
    def log_flow(self) -> np.ndarray:
        """(n_nodes,) log F, -inf where F = 0."""
        with np.errstate(divide="ignore"):
            return np.log(self.flow)

    @functools.cached_property
    def node_log_reward(self) -> np.ndarray:
        """(n_nodes,) log R_p of the edge into each node: log F(node) - log F(parent); 0 at the root."""
        log_flow = self.log_flow
        out = np.zeros(self.n_nodes, dtype=np.float64)
        child, par = np.arange(1, self.n_nodes), self.parent[1:]
        finite = np.isfinite(log_flow[child])
        out[child] = np.where(finite, log_flow[child] - np.where(finite, log_flow[par], 0.0), -np.inf)
        return out

    @property
    def edge_log_reward(self) -> np.ndarray:
        """(n_edges,) log R_p(s, a) = log F(s + a) - log F(s) per CSR edge, -inf where F(s + a) = 0."""
        return self.node_log_reward[self.child_node]

    # ---- torch side (vectorised over the batch, tensors cached per device) --------------------------
    def _on(self, device: torch.device) -> SimpleNamespace:
        key = str(device)
        cached = self._torch.get(key)
        if cached is None:
            t = functools.partial(torch.as_tensor, device=device)
            width = self.max_token + 1
            plain = ("child_ptr", "child_token", "child_node", "leaf_start", "leaf_end", "node_title")
            cached = SimpleNamespace(
                **{name: t(getattr(self, name)) for name in plain},
                width=width,
                # ascending, as the CSR is sorted by (node, token): searchsorted finds edges
                keys=t(self.parent[self.child_node] * width + self.child_token),
                child_flow=t(self.flow[self.child_node] > 0),
                log_flow=t(self.log_flow),
                node_log_reward=t(self.node_log_reward),
            )
            self._torch[key] = cached
        return cached

    def step(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Node reached from `nodes` by `tokens` (any equal shapes), -1 where that edge does not exist."""
        c = self._on(nodes.device)
        nodes, tokens = nodes.long(), tokens.long()
        valid = (nodes >= 0) & (tokens >= 0) & (tokens < c.width)
        key = torch.where(valid, nodes * c.width + tokens, torch.zeros_like(nodes))
        idx = (
            torch.searchsorted(c.keys, key.reshape(-1)).reshape(key.shape).clamp_max(max(self.n_edges - 1, 0))
        )
        found = valid & (c.keys[idx] == key)
        return torch.where(found, c.child_node[idx], torch.full_like(nodes, -1))

    def allowed_mask(self, nodes: torch.Tensor, vocab_size: int, require_flow: bool = False) -> torch.Tensor:
        """(B, V) bool: tokens with an edge from each node of `nodes` (B,); rows of -1 or leaves: none.

        require_flow: only edges into nodes with positive flow (on-policy sampling of rewarded titles).
        """
        if self.max_token >= vocab_size:
            raise ValueError(f"trie holds token id {self.max_token}, not below vocab_size {vocab_size}")
        c = self._on(nodes.device)
        nodes = nodes.long()
        safe = nodes.clamp_min(0)
        start = c.child_ptr[safe]
        counts = torch.where(nodes >= 0, c.child_ptr[safe + 1] - start, torch.zeros_like(start))
        rows = torch.repeat_interleave(torch.arange(len(nodes), device=nodes.device), counts)
        offsets = torch.cumsum(counts, 0) - counts  # first flat position of each row
        edges = start[rows] + torch.arange(len(rows), device=nodes.device) - offsets[rows]
        if require_flow:
            keep = c.child_flow[edges]
            rows, edges = rows[keep], edges[keep]
        mask = torch.zeros(len(nodes), vocab_size, dtype=torch.bool, device=nodes.device)
        mask[rows, c.child_token[edges]] = True
        return mask

    def edge_log_reward_of(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """log R_p(s, a) for states `nodes` and tokens `tokens` (float64), -inf for missing edges."""
        c = self._on(nodes.device)
        child = self.step(nodes, tokens)
        out = c.node_log_reward[child.clamp_min(0)]
        return torch.where(child >= 0, out, torch.full_like(out, -torch.inf))

    def state_log_flows(self, nodes: torch.Tensor) -> torch.Tensor:
        """log F(s) of states `nodes` (float64, any shape), -inf for -1 or zero flow.

        The loss takes differences of these at its granularity: log R_p over n tokens is
        log F(s_{t+n}) - log F(s_t).
        """
        c = self._on(nodes.device)
        out = c.log_flow[nodes.long().clamp_min(0)]
        return torch.where(nodes >= 0, out, torch.full_like(out, -torch.inf))

    def subtree_mass(self, title_scores: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """(B, K): sum of `title_scores` (B, n_titles) over the titles below each node of `nodes` (B, K).

        Cumulative sum over the title order (float64 so that differences stay exact enough); 0 for -1.
        """
        c = self._on(nodes.device)
        if title_scores.shape[-1] != self.n_titles:
            raise ValueError(
                f"title_scores: last dim {title_scores.shape[-1]}, expected n_titles={self.n_titles}"
            )
        csum = torch.nn.functional.pad(torch.cumsum(title_scores.double(), dim=-1), (1, 0))
        safe = nodes.long().clamp_min(0)
        mass = csum.gather(-1, c.leaf_end[safe]) - csum.gather(-1, c.leaf_start[safe])
        mass = torch.where(nodes >= 0, mass.clamp_min(0), torch.zeros_like(mass))
        return mass.to(title_scores.dtype)

    def is_leaf(self, nodes: torch.Tensor) -> torch.Tensor:
        """True where the node is a title's end (after EOS)."""
        c = self._on(nodes.device)
        return (nodes >= 0) & (c.node_title[nodes.long().clamp_min(0)] >= 0)

    def path_nodes(self, tokens: torch.Tensor, start: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) node after each token of `tokens` (B, T) walked from `start` (B,) (default: root).

        -1 from the first token without an edge on (e.g. padding after a leaf). One `step` per column.
        """
        node = (
            torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
            if start is None
            else start.long()
        )
        out = torch.empty(tokens.shape, dtype=torch.long, device=tokens.device)
        for t in range(tokens.shape[1]):
            node = self.step(node, tokens[:, t])
            out[:, t] = node
        return out

    def title_of(self, nodes: torch.Tensor) -> torch.Tensor:
        """Title id at leaf nodes, -1 elsewhere."""
        c = self._on(nodes.device)
        out = c.node_title[nodes.long().clamp_min(0)]
        return torch.where(nodes >= 0, out, torch.full_like(out, -1))

    # ---- persistence --------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write every array, the titles (UTF-8 bytes + offsets: no pickle) and the flows to an .npz."""
        encoded = [t.encode("utf-8") for t in self.titles]
        offsets = np.concatenate([[0], np.cumsum([len(b) for b in encoded])]).astype(np.int64)
        arrays = {name: getattr(self, name) for name in _ARRAYS}
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh,
                format_version=np.int64(FORMAT_VERSION),
                titles_utf8=np.frombuffer(b"".join(encoded), dtype=np.uint8),
                titles_offsets=offsets,
                flow=self.flow,
                **arrays,
            )

    @classmethod
    def load(cls, path: str | Path) -> Trie:
        with np.load(path, allow_pickle=False) as npz:
            version = int(npz["format_version"]) if "format_version" in npz else None
            if version != FORMAT_VERSION:
                raise ValueError(
                    f"{path}: trie format version {version}, expected {FORMAT_VERSION}; rebuild it"
                )
            missing = [n for n in (*_ARRAYS, "titles_utf8", "titles_offsets") if n not in npz]
            if missing:
                raise ValueError(f"{path}: missing arrays {missing}")
            raw, off = npz["titles_utf8"].tobytes(), npz["titles_offsets"]
            titles = [raw[off[i] : off[i + 1]].decode("utf-8") for i in range(len(off) - 1)]
            return cls(titles=titles, **{name: npz[name] for name in _ARRAYS})


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def build_trie(item_titles: Sequence[str], tokenizer, train_histories=None) -> Trie:
    """The pipeline's trie: paths from `prompts.title_ids`, R(i) = title i's count in train histories."""
    from flowrec.prompts import title_ids_batch

    names = unique_titles(item_titles)
    trie = Trie.build(item_titles, title_ids_batch(tokenizer, names))
    if train_histories is None:
        return trie
    return trie.with_rewards(title_rewards_from_histories(train_histories, trie.item_title, trie.n_titles))

"""Prefix tree over tokenized titles: children, state flows, process rewards (docs/method.md section 3).

One structure serves Flower's process rewards, the constrained decoder and D3's assistant scores.
Nodes are token prefixes; node 0 is the root (empty prefix). Every title's path is `prompts.title_ids`
(title, newline, EOS), so leaves are the nodes after EOS and a title that is a prefix of another one
("Back to the Future" / "Back to the Future II") still ends at its own leaf through its termination edge.

Numbering: titles are sorted by their token ids, nodes are numbered in pre-order (DFS, children by token
id), so the titles below any node form the contiguous range [leaf_start, leaf_end). Sums over subtrees
(flows, D3 assistant mass) are then differences of a cumulative sum, never a walk over the tree.
Building the arrays and the trie.npz format are flowrec.trie_arrays.

Flow (docs/method.md section 3): F(leaf of title i) = R(i), F(node) = sum of its children's flows, so
F(node) = sum of R over the node's title range. Process reward R_p(s, a) = F(s + a) / F(s); stored as
log F(child) - log F(parent), -inf where F(child) = 0 (titles absent from train histories have no flow).
Granularity n (states every n tokens) is applied by the loss from `state_log_flows`, not stored here.
Popularity groups (docs/method.md section 6) live in flowrec.groups.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from flowrec.groups import title_rewards_from_histories
from flowrec.titles import unique_titles
from flowrec.trie_arrays import build_arrays, load_arrays, save_arrays


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
        """Build the trie of the titles of items 0..n_items-1 (flowrec.trie_arrays.build_arrays).

        title_token_ids: a function title -> ids (e.g. `functools.partial(prompts.title_ids, tok)`),
        a mapping title -> ids, or a list aligned with `unique_titles(item_titles)`.
        title_rewards: R per title (mapping, or aligned with `unique_titles`); None gives zeros (set
        them later with `with_rewards`, e.g. from `title_rewards_from_histories(.., trie.item_title, ..)`).
        """
        return cls(**build_arrays(item_titles, title_token_ids, title_rewards))

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
    def title_paths(self) -> np.ndarray:
        """(n_titles, longest path) int64: the node after each token of each title's path, -1 past its
        leaf (nodes are pre-order, so a title's path is its leaf's ancestors)."""
        leaves = np.flatnonzero(self.node_title >= 0)
        leaf = np.empty(self.n_titles, dtype=np.int64)
        leaf[self.node_title[leaves]] = leaves
        length = self.depth[leaf].astype(np.int64)
        out = np.full((self.n_titles, int(length.max(initial=0))), -1, dtype=np.int64)
        node, pos = leaf.copy(), length - 1
        while (alive := pos >= 0).any():  # one column per step up the tree, all titles at once
            out[np.flatnonzero(alive), pos[alive]] = node[alive]
            node, pos = np.where(alive, self.parent[node], node), pos - 1
        return out

    def _sole_titles(self, below: np.ndarray) -> np.ndarray:
        """(n_nodes,) the only title below each node among the titles where `below` (n_titles,) holds,
        -1 where there are several or none."""
        count = np.concatenate([[0], np.cumsum(below)])
        ids = np.flatnonzero(below)
        first = ids[np.minimum(count[self.leaf_start], max(len(ids) - 1, 0))] if len(ids) else 0
        return np.where(count[self.leaf_end] - count[self.leaf_start] == 1, first, -1)

    @functools.cached_property
    def flow(self) -> np.ndarray:
        """(n_nodes,) F(node) = sum of R over the titles below it (docs/method.md section 3)."""
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
            flow_edge = np.flatnonzero(self.flow[self.child_node] > 0)  # ascending: grouped by node
            owner = self.parent[self.child_node[flow_edge]]
            plain = ("child_ptr", "child_token", "child_node", "leaf_start", "leaf_end", "node_title")
            cached = SimpleNamespace(
                **{name: t(getattr(self, name)) for name in plain},
                width=width,
                # ascending, as the CSR is sorted by (node, token): searchsorted finds edges
                keys=t(self.parent[self.child_node] * width + self.child_token),
                child_flow=t(self.flow[self.child_node] > 0),
                # The edges into nodes with positive flow as a CSR of their own (flow_ptr over
                # flow_edge, edge ids), so that sampling restricted to them packs children directly.
                flow_ptr=t(np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=self.n_nodes))])),
                flow_edge=t(flow_edge),
                log_flow=t(self.log_flow),
                node_log_reward=t(self.node_log_reward),
                node_token=t(self.node_token),
                depth=t(self.depth),
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

    def children(
        self, nodes: torch.Tensor, require_flow: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The edges out of each node of `nodes` (B,), packed to the left in token order:
        (tokens (B, K), child nodes (B, K), valid (B, K)), K the most edges of a row (at least 1);
        -1 rows and leaves have none. The rows of `allowed_mask` as id lists, read from the CSR
        without a (B, V) mask (K is a few tokens below the root).

        require_flow: only edges into nodes with positive flow (their own CSR, `_on`).
        """
        c = self._on(nodes.device)
        nodes = nodes.long()
        ptr = c.flow_ptr if require_flow else c.child_ptr
        safe = nodes.clamp_min(0)
        start = ptr[safe]
        counts = torch.where(nodes >= 0, ptr[safe + 1] - start, torch.zeros_like(start))
        width = max(int(counts.max()), 1) if len(nodes) else 1
        slot = torch.arange(width, device=nodes.device)
        valid = slot < counts.unsqueeze(1)  # (B, K)
        edges = torch.where(valid, start.unsqueeze(1) + slot, 0)
        if require_flow:
            edges = c.flow_edge[edges] if len(c.flow_edge) else edges
        tokens = torch.where(valid, c.child_token[edges], 0)
        return tokens, torch.where(valid, c.child_node[edges], -1), valid

    def _forced_tails(self, device: torch.device) -> SimpleNamespace:
        """The tables the sampler reads forced title tails from, on `device`, built on first use (the
        decoder never needs them): each title's path nodes and the sole (rewarded) title below a node."""
        key = f"{device}/forced"
        cached = self._torch.get(key)
        if cached is None:
            t = functools.partial(torch.as_tensor, device=device)
            cached = SimpleNamespace(
                title_paths=t(self.title_paths),
                sole_title=t(self._sole_titles(np.ones(self.n_titles, dtype=bool))),
                sole_flowing_title=t(self._sole_titles(self.title_reward > 0)),
            )
            self._torch[key] = cached
        return cached

    def sole_title(self, nodes: torch.Tensor, require_flow: bool = False) -> torch.Tensor:
        """The only title below each node of `nodes` (B,), -1 where there are several; require_flow:
        the only one with positive reward (the one every flowing path from the node ends at)."""
        c = self._forced_tails(nodes.device)
        table = c.sole_flowing_title if require_flow else c.sole_title
        return torch.where(nodes >= 0, table[nodes.long().clamp_min(0)], -1)

    def rest_of_titles(self, nodes: torch.Tensor, titles: torch.Tensor, length: int) -> torch.Tensor:
        """(B, length): the nodes after the next `length` tokens on the path of `titles` (B,) from
        `nodes` (B,), each on that path; -1 past a title's leaf."""
        pos = self.depth_of(nodes).unsqueeze(1) + torch.arange(length, device=nodes.device)  # (B, length)
        paths = self._forced_tails(nodes.device).title_paths[titles.long()]  # (B, longest path)
        inside = pos < paths.shape[1]
        return torch.where(inside, paths.gather(1, pos.clamp_max(paths.shape[1] - 1)), -1)

    def depth_of(self, nodes: torch.Tensor) -> torch.Tensor:
        """Tokens in the prefix of each node of `nodes` (any shape)."""
        return self._on(nodes.device).depth[nodes.long().clamp_min(0)]

    def token_into(self, nodes: torch.Tensor) -> torch.Tensor:
        """Token of the edge into each node of `nodes` (any shape), -1 at the root and for -1."""
        c = self._on(nodes.device)
        return torch.where(nodes >= 0, c.node_token[nodes.long().clamp_min(0)], -1)

    def child_count(self, nodes: torch.Tensor) -> torch.Tensor:
        """Number of edges out of each node of `nodes` (any shape), zero-flow ones included; 0 for -1."""
        c = self._on(nodes.device)
        safe = nodes.long().clamp_min(0)
        return torch.where(nodes >= 0, c.child_ptr[safe + 1] - c.child_ptr[safe], 0)

    def edge_log_reward_of(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """log R_p(s, a) for states `nodes` and tokens `tokens` (float64), -inf for missing edges."""
        c = self._on(nodes.device)
        child = self.step(nodes, tokens)
        out = c.node_log_reward[child.clamp_min(0)]
        return torch.where(child >= 0, out, torch.full_like(out, -torch.inf))

    def log_reward_into(self, nodes: torch.Tensor) -> torch.Tensor:
        """log R_p of the edge into each node of `nodes` (float64, any shape); 0 at the root and for -1."""
        out = self._on(nodes.device).node_log_reward[nodes.long().clamp_min(0)]
        return torch.where(nodes >= 0, out, torch.zeros_like(out))

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
        """Write trie.npz: every array, the titles and the flows (flowrec.trie_arrays.save_arrays)."""
        save_arrays(path, vars(self), self.titles, self.flow)

    @classmethod
    def load(cls, path: str | Path) -> Trie:
        return cls(**load_arrays(path))


def build_trie(item_titles: Sequence[str], tokenizer, train_histories=None) -> Trie:
    """The pipeline's trie: paths from `prompts.title_ids`, R(i) = title i's count in train histories."""
    from flowrec.prompts import title_ids_batch

    names = unique_titles(item_titles)
    trie = Trie.build(item_titles, title_ids_batch(tokenizer, names))
    if train_histories is None:
        return trie
    return trie.with_rewards(title_rewards_from_histories(train_histories, trie.item_title, trie.n_titles))

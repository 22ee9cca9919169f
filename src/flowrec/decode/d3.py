"""D3's text-free assistant (Bao et al. 2024, "Decoding Matters"; docs/method.md section 5).

At each trie node s, the assistant scores a child token a by the share of SASRec's probability mass
that lies below the child: p_assist(a | s) = mass(s + a) / mass(s), where mass(node) is the sum of
SASRec's p_ui over the items whose titles lie below that node. The decoder mixes it with the LLM:
score(a) = g * log p_LLM(a | x, s) + (1 - g) * log p_assist(a | s); g = 1 switches the assistant off
(the value the published D3 scripts leave it at).
"""

from __future__ import annotations

import numpy as np
import torch

from flowrec import titles
from flowrec.trie import Trie

# SASRec's p_ui is stored as float16, whose smallest positive value is ~6e-8: unlikely items round to 0.
# Every title gets this floor so that no allowed child has zero assistant mass (log 0 would forbid a
# title the trie allows, and a zero-mass node would give 0/0).
ASSIST_FLOOR = 1e-12


def title_masses(item_scores: np.ndarray, item_title: np.ndarray, n_titles: int) -> np.ndarray:
    """Per-title probability mass (n, n_titles) float64: p_ui summed over the items sharing a title.

    item_scores: (n, n_items) SASRec probabilities (rows of p_ui_{split}.npy, any float dtype), summed
    in float64 (float16 sums would lose the small masses); item_title: (n_items,) title id of each item
    id (Trie.item_title); items with -1 have no title.
    """
    scores = torch.as_tensor(np.asarray(item_scores, dtype=np.float64))  # (n, n_items)
    return titles.title_scores(scores, item_title, n_titles, reduce="sum").numpy()


def assistant_log_probs(
    trie: Trie, title_scores: torch.Tensor, nodes: torch.Tensor, row: torch.Tensor, child: torch.Tensor
) -> torch.Tensor:
    """log p_assist(child | node) = log mass(child) - log mass(node) for every edge, (E,).

    title_scores: (B, n_titles) strictly positive mass of each title for the beam's prompt;
    nodes: (B,) trie node of each beam (-1: empty slot, no edges); row, child: (E,) the beam each edge
    leaves and the node it reaches, grouped by row in ascending order (as `nonzero` of the allowed
    mask gives them). Each beam's node and children are laid out in one (B, width) grid so that one
    Trie.subtree_mass call prices all of them; no loop over beams or tokens.
    """
    if row.numel() == 0:
        return title_scores.new_zeros(0)
    counts = torch.bincount(row, minlength=nodes.shape[0])  # (B,)
    column = torch.arange(row.numel(), device=row.device) - (counts.cumsum(0) - counts)[row] + 1
    grid = nodes.new_zeros(nodes.shape[0], int(counts.max()) + 1)  # column 0: the node itself
    grid[:, 0] = nodes.clamp_min(0)
    grid[row, column] = child
    mass = trie.subtree_mass(title_scores, grid)  # (B, width + 1)
    return torch.log(mass[row, column]) - torch.log(mass[row, 0])

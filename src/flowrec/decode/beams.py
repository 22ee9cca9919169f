"""The beams of one batch of prompts: which tokens they may take, their scores, the finished pool and
when to stop (docs/method.md sections 1 and 5). The model stays outside: flowrec.decode.search feeds
the logits in and the chosen tokens back to the model.

Every decoded title is a real item: a beam may only take a token that continues a path of the trie,
and it finishes exactly when it reaches a leaf (every title ends with "\\n" + EOS, so titles that are
prefixes of others, "Back to the Future" / "Back to the Future II", are distinct leaves). Beams of
one prompt follow distinct trie paths, so the returned titles are distinct.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from flowrec.decode.d3 import assistant_log_probs
from flowrec.trie import Trie

Ranked = list[tuple[int, float]]  # (title id, score), best first


class TrieArrays:
    """Trie arrays the search reads besides the Trie's own torch methods, as tensors on `device`."""

    def __init__(self, trie: Trie, device: torch.device):
        self.node_title = torch.as_tensor(np.asarray(trie.node_title, dtype=np.int64), device=device)


class BatchBeams:
    """Beams, finished pool and stopping rule of one batch of prompts; the model stays outside.

    Rows are prompt-major: the live beams of active prompt i are rows i*k ... i*k + k-1. `advance`
    turns the next-token logits of the live rows into the next tokens and the rows (parents) whose
    cache each new beam continues.
    """

    def __init__(
        self,
        trie: Trie,
        arrays: TrieArrays,
        n_prompts: int,
        num_beams: int,
        *,
        device: torch.device,
        dtype: torch.dtype,
        temperature: float = 1.0,
        length_normalise: bool = True,
        title_scores: torch.Tensor | None = None,
        assistant_weight: float = 1.0,
    ):
        self.trie, self.arrays, self.k = trie, arrays, num_beams
        self.temperature, self.length_normalise = temperature, length_normalise
        self.title_scores, self.assistant_weight = title_scores, assistant_weight
        self.active = torch.arange(n_prompts, device=device)  # prompts still searching, one row block each
        # One live beam per prompt at first, at the root (rows repeat the prompt's cache); the others are
        # empty slots: node -1 has no edges, score -inf.
        self.nodes = torch.full((n_prompts, num_beams), -1, dtype=torch.long, device=device)
        self.nodes[:, 0] = 0
        self.nodes = self.nodes.reshape(-1)
        self.beam_scores = torch.full((n_prompts, num_beams), -math.inf, dtype=dtype, device=device)
        self.beam_scores[:, 0] = 0.0
        self.pool_scores = torch.full((n_prompts, num_beams), -math.inf, dtype=dtype, device=device)
        self.pool_titles = torch.full((n_prompts, num_beams), -1, dtype=torch.long, device=device)
        self.step = 0  # tokens generated so far

    def advance(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Take one step from `logits` (R, V) of the live rows: (parent rows (R',), tokens (R',)) of the
        new live beams, or None when every prompt is done. Finished titles go to the pool.

        Only the trie's edges out of the live beams are scored: the (R, V) allowed mask gives them as
        (row, token) pairs, so no (R, V) score matrix is masked or sorted; the vocabulary-wide work is
        the log-softmax, the mask and its nonzero, against the log-softmax, the beam-score addition and
        the top-k over k * V candidates of an unconstrained step.
        """
        k, trie, arrays = self.k, self.trie, self.arrays
        self.step += 1
        n_active, vocab = self.active.shape[0], logits.shape[-1]
        logits = logits.to(self.beam_scores.dtype)
        if self.temperature != 1.0:
            logits = logits / self.temperature
        logp = torch.log_softmax(logits, dim=-1)  # (R, V); one fused pass (CPU logsumexp is slower)
        row, token = trie.allowed_mask(self.nodes, vocab).nonzero(as_tuple=True)  # (E,) edges, row-major
        if row.numel() == 0:
            return None
        child = trie.step(self.nodes[row], token)  # (E,)
        edge_scores = logp[row, token]  # log p_LLM(token | prompt, beam)
        if self.title_scores is not None:
            scores = self.title_scores[self.active].repeat_interleave(k, dim=0)  # (R, n_titles)
            assist = assistant_log_probs(trie, scores, self.nodes, row, child).to(edge_scores.dtype)
            edge_scores = self.assistant_weight * edge_scores + (1.0 - self.assistant_weight) * assist
        edge_scores = edge_scores + self.beam_scores.reshape(-1)[row]

        # Ragged edges -> one dense (A, width) row per prompt, -inf padded, for a batched top-k.
        prompt = torch.div(row, k, rounding_mode="floor")
        counts = torch.bincount(prompt, minlength=n_active)
        column = torch.arange(row.numel(), device=row.device) - (counts.cumsum(0) - counts)[prompt]
        width = max(int(counts.max()), 2 * k)
        dense = edge_scores.new_full((n_active, width), -math.inf)
        dense[prompt, column] = edge_scores
        edge_at = row.new_zeros((n_active, width))
        edge_at[prompt, column] = torch.arange(row.numel(), device=row.device)
        top_scores, top_pos = dense.topk(2 * k, dim=1)  # (A, 2k), best first
        edge = edge_at.gather(1, top_pos)
        parent_row, top_token, top_child = row[edge], token[edge], child[edge]
        valid = torch.isfinite(top_scores)
        finished = valid & trie.is_leaf(top_child)

        # Finished pool: the best k titles so far (length-normalised when asked), per prompt.
        final = top_scores / self.step if self.length_normalise else top_scores
        merged_scores = torch.cat(
            [self.pool_scores[self.active], final.masked_fill(~finished, -math.inf)], dim=1
        )
        new_titles = torch.where(finished, arrays.node_title[top_child], -1)
        merged_titles = torch.cat([self.pool_titles[self.active], new_titles], dim=1)
        pool_scores, best = merged_scores.topk(k, dim=1)
        self.pool_scores[self.active] = pool_scores
        self.pool_titles[self.active] = merged_titles.gather(1, best)

        # Live beams: the best k unfinished candidates of each prompt; empty slots get node -1 (no edges).
        live_scores, pick = top_scores.masked_fill(~valid | finished, -math.inf).topk(k, dim=1)  # (A, k)
        live_nodes = torch.where(torch.isfinite(live_scores), top_child.gather(1, pick), -1)
        keep = ~self._done(live_scores, pool_scores)
        if not bool(keep.any()):
            return None
        self.active = self.active[keep]
        self.beam_scores = live_scores[keep]
        self.nodes = live_nodes[keep].reshape(-1)
        return parent_row.gather(1, pick)[keep].reshape(-1), top_token.gather(1, pick)[keep].reshape(-1)

    def _done(self, live_scores: torch.Tensor, pool_scores: torch.Tensor) -> torch.Tensor:
        """(A,) bool: no live beam left, or the pool is full and the best live beam cannot beat its worst.

        Every later step adds a score <= 0 (a log-probability, or D3's mix of two), so without length
        normalisation a live beam's final score is at most its current one: the rule is exact. With it,
        the live beam is judged at its current length, Hugging Face's rule (early_stopping=False), as
        the published decoder stops; a longer continuation could still score a little higher.
        """
        best = live_scores[:, 0]  # (A,) live beams are sorted
        no_live = ~torch.isfinite(best)
        if self.length_normalise:
            best = best / self.step
        worst = pool_scores[:, -1]
        return no_live | (torch.isfinite(worst) & (best <= worst))

    def ranked(self) -> list[Ranked]:
        """Per prompt of the batch: (title id, score) of the pool, best first."""
        out: list[Ranked] = []
        for scores, titles in zip(
            self.pool_scores.cpu().tolist(), self.pool_titles.cpu().tolist(), strict=True
        ):
            out.append([(t, s) for t, s in zip(titles, scores, strict=True) if t >= 0 and math.isfinite(s)])
        return out

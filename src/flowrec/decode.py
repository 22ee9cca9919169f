"""Trie-constrained batched beam search (method.md sections 1 and 5): BIGRec, Temp, D3, IFairLRS, Flower.

Every decoded title is a real item: at each step a beam may only take a token that continues a path
of the trie, and a beam finishes exactly when it reaches a leaf (every title ends with "\\n" + EOS, so
titles that are prefixes of others, "Back to the Future" / "Back to the Future II", are distinct
leaves). Beams of one prompt follow distinct trie paths, so the returned titles are distinct.

Cost (method.md section 8): the published decoder runs one prompt at a time and prefills it once per
beam. Here prompts are batched (left padding, attention mask, positions counted over real tokens),
each prompt is encoded once and its KV cache repeated to its beams, and every later step feeds one
token per beam on top of the cache. The trie constraint is one boolean (beams, V) mask a step
(Trie.allowed_mask), read as the list of edges out of the live beams: only those are scored and
ranked, so a constrained step costs no more than an unconstrained one (bench/decode_speed.py).

Scores: sum of log-probabilities of the generated tokens (temperature divides the logits before the
log-softmax), divided by the number of generated tokens when `length_normalise` (Hugging Face's
default length_penalty=1). D3 turns the normalisation off and mixes in SASRec's assistant
(flowrec.d3): g * log p_LLM + (1 - g) * log p_assist.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

from flowrec.d3 import ASSIST_FLOOR, assistant_log_probs
from flowrec.trie import Trie

Ranked = list[tuple[int, float]]  # (title id, score), best first


@dataclass
class DecodeSettings:
    """How one method decodes: the `decode:` config block resolved per method by rules/infer.smk.

    test_samples, seed, num_beams, num_return, batch_size are the block's keys of those names;
    temperature (Temp: decode.temp_temperature, else 1), length_normalise (false for D3) and
    assistant_weight (D3's g: decode.d3_weight for d3, 1 for d3_noassist; null: no assistant).
    """

    test_samples: int | None = None
    seed: int = 42
    num_beams: int = 10
    num_return: int = 10
    batch_size: int = 8
    temperature: float = 1.0
    length_normalise: bool = True
    assistant_weight: float | None = None

    @classmethod
    def from_params(cls, params: dict) -> DecodeSettings:
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise ValueError(f"decode settings: unknown key(s) {unknown}; expected {names}")
        return cls(**params)


def left_pad(prompts: list[list[int]], pad_token_id: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Left-padded ids (P, L), attention mask (P, L) and position ids (P, L) counted over real tokens."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.as_tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


class TrieArrays:
    """Trie arrays the search reads besides the Trie's own torch methods, as tensors on `device`."""

    def __init__(self, trie: Trie, device: torch.device):
        self.node_title = torch.as_tensor(np.asarray(trie.node_title, dtype=np.int64), device=device)


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def constrained_beam_search(
    model,
    prompts: list[list[int]],
    trie: Trie,
    *,
    num_beams: int = 10,
    num_return: int = 10,
    batch_size: int = 8,
    temperature: float = 1.0,
    length_normalise: bool = True,
    assistant_title_scores: np.ndarray | None = None,
    assistant_weight: float = 1.0,
    pad_token_id: int = 0,
    progress: bool = False,
) -> list[Ranked]:
    """Beam search over the trie's titles for each prompt: a ranked list of (title_id, score) per prompt.

    prompts: token ids per prompt (flowrec.prompts.prompt_ids); the decoded titles continue them at id
    level exactly as the SFT targets do. Returns min(num_return, titles reachable) distinct titles per
    prompt, best first. assistant_title_scores: (n_prompts, n_titles) SASRec mass per title (D3,
    flowrec.d3.title_masses), mixed with weight g = assistant_weight (method.md section 5).
    """
    if not prompts:
        return []
    if num_return > num_beams:
        raise ValueError(f"constrained_beam_search: num_return={num_return} exceeds num_beams={num_beams}")
    if temperature <= 0:
        raise ValueError(f"constrained_beam_search: temperature must be > 0, got {temperature}")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("constrained_beam_search: empty prompt (every prompt needs at least one token)")
    if assistant_title_scores is not None:
        if not 0.0 <= assistant_weight <= 1.0:
            raise ValueError(
                f"constrained_beam_search: assistant_weight must be in [0, 1], got {assistant_weight}"
            )
        if assistant_title_scores.shape != (len(prompts), len(trie.titles)):
            raise ValueError(
                f"constrained_beam_search: assistant_title_scores has shape {assistant_title_scores.shape}, "
                f"expected (n_prompts, n_titles) = {(len(prompts), len(trie.titles))}"
            )
    device = _model_device(model)
    arrays = TrieArrays(trie, device)
    # Longest prompts first: batches of similar lengths pad little, and memory peaks on the first batch.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    results: list[Ranked] = [[] for _ in prompts]
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    with eval_mode(model):
        for batch in tqdm(batches, desc="decode batches", disable=not progress):
            title_scores = None
            if assistant_title_scores is not None:
                rows = np.asarray(assistant_title_scores[batch], dtype=np.float64)
                title_scores = torch.as_tensor(rows, device=device) + ASSIST_FLOOR
            cache, logits, mask, position = encode_prompts(
                model, [prompts[i] for i in batch], pad_token_id, num_beams
            )
            beams = BatchBeams(
                trie,
                arrays,
                len(batch),
                num_beams,
                device=device,
                # Scores in fp32 at least (bf16 logits on GPU), fp64 when the model runs in fp64.
                dtype=torch.promote_types(logits.dtype, torch.float32),
                temperature=temperature,
                length_normalise=length_normalise,
                title_scores=title_scores,
                assistant_weight=assistant_weight,
            )
            while (chosen := beams.advance(logits)) is not None:
                logits, mask, position = feed_tokens(model, cache, mask, position, *chosen)
            for i, titles in zip(batch, beams.ranked(), strict=True):
                results[i] = titles[:num_return]
    return results


@contextmanager
def eval_mode(model) -> Iterator[None]:
    """Decode without dropout; the caller's train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


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


def encode_prompts(model, prompts: list[list[int]], pad_token_id: int, num_beams: int):
    """Encode each prompt once and repeat its KV cache to its beams (rows p*k ... p*k + k-1).

    Returns (cache, next-token logits (P*k, V), attention mask (P*k, L), next position (P*k,)).
    """
    ids, mask, positions = left_pad(prompts, pad_token_id, _model_device(model))
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=DynamicCache(),
        use_cache=True,
        logits_to_keep=1,
    )
    cache = out.past_key_values
    cache.batch_repeat_interleave(num_beams)
    logits = out.logits[:, -1].repeat_interleave(num_beams, dim=0)
    next_position = (positions[:, -1] + 1).repeat_interleave(num_beams)
    return cache, logits, mask.repeat_interleave(num_beams, dim=0), next_position


def feed_tokens(
    model, cache, mask: torch.Tensor, position: torch.Tensor, rows: torch.Tensor, tokens: torch.Tensor
):
    """One decoding forward: every new beam continues its parent row's cache with its token.

    Returns (next-token logits (R', V), attention mask (R', L + 1), next position (R',)); `cache` is
    reordered (index_select on the batch dim) and extended in place.
    """
    cache.reorder_cache(rows)
    mask = torch.cat([mask[rows], mask.new_ones(rows.shape[0], 1)], dim=1)
    position = position[rows]
    out = model(
        input_ids=tokens[:, None],
        attention_mask=mask,
        position_ids=position[:, None],
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    return out.logits[:, -1], mask, position + 1


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


__all__ = [
    "BatchBeams",
    "DecodeSettings",
    "Ranked",
    "TrieArrays",
    "constrained_beam_search",
    "encode_prompts",
    "eval_mode",
    "feed_tokens",
    "left_pad",
    "predictions_table",
    "smallest_item_of_title",
]

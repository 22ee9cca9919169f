"""Trie-constrained batched beam search (docs/method.md sections 1 and 5): BIGRec, Temp, D3, IFairLRS,
Flower.

Cost (docs/method.md section 8): the published decoder runs one prompt at a time and prefills it once
per beam. Here prompts are batched (flowrec.lm: left padding, attention mask, positions counted over
real tokens), each prompt is encoded once and its KV cache repeated to its beams, and every later step
feeds one token per beam on top of the cache, reordered to the beams' parents. The trie constraint is
one boolean (beams, V) mask a step (Trie.allowed_mask), read as the list of edges out of the live
beams: only those are scored and ranked (flowrec.decode.beams), so a constrained step costs no more
than an unconstrained one (bench/decode_speed.py).

Scores: sum of log-probabilities of the generated tokens (temperature divides the logits before the
log-softmax), divided by the number of generated tokens when `length_normalise` (Hugging Face's
default length_penalty=1). D3 turns the normalisation off and mixes in SASRec's assistant
(flowrec.decode.d3): g * log p_LLM + (1 - g) * log p_assist.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

from flowrec.decode.beams import BatchBeams, Ranked, TrieArrays
from flowrec.decode.d3 import ASSIST_FLOOR
from flowrec.lm import encode_prompts, feed_tokens, left_pad
from flowrec.trie import Trie


def model_device(model) -> torch.device:
    """The device of the model's parameters (where prompts, masks and trie arrays go)."""
    return next(model.parameters()).device


@torch.inference_mode()
def constrained_beam_search(
    model,
    prompts: list[list[int]],
    trie: Trie,
    *,
    num_beams: int,
    num_return: int,
    batch_size: int,
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
    flowrec.decode.d3.title_masses), mixed with weight g = assistant_weight (docs/method.md section 5).
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
    device = model_device(model)
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
            cache, logits, mask = encode_beams(model, [prompts[i] for i in batch], pad_token_id, num_beams)
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
                logits, mask = feed_beams(model, cache, mask, *chosen)
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


def encode_beams(
    model, prompts: list[list[int]], pad_token_id: int, num_beams: int
) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:
    """Encode each prompt once and repeat its KV cache to its beams (rows p*k ... p*k + k-1).

    Returns (cache, next-token logits (P*k, V), attention mask (P*k, L)).
    """
    ids, mask = left_pad(prompts, pad_token_id, model_device(model))
    cache, logits = encode_prompts(model, ids, mask)
    cache.batch_repeat_interleave(num_beams)
    return cache, logits.repeat_interleave(num_beams, dim=0), mask.repeat_interleave(num_beams, dim=0)


def feed_beams(
    model, cache: DynamicCache, mask: torch.Tensor, rows: torch.Tensor, tokens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding forward: every new beam continues its parent row's cache with its token.

    rows, tokens: (R',) the parent row and the token of each new beam (BatchBeams.advance). Returns
    (next-token logits (R', V), attention mask (R', L + 1)); `cache` is reordered to the parents
    (index_select on the batch dim) and extended in place.
    """
    cache.reorder_cache(rows)
    out, mask = feed_tokens(model, cache, mask[rows], tokens, logits_to_keep=1)
    return out.logits[:, -1], mask

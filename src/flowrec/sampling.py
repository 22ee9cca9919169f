"""Trie-constrained sampling of titles with a KV cache (Flower's on-policy samples, distribution fitting).

Prompts are left-padded and their padding masked; the prompt is encoded once and each sampled token
is fed alone on top of the cache, with position ids counted over real tokens only (cumulative mask - 1),
so a padded prompt gives the same next-token distribution as the unpadded one (method.md section 8).
All samples of a batch advance in parallel: the trie constraint is one boolean (B, V) mask a step.
"""

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from flowrec.trie import Trie


def left_pad(sequences: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad 1-D id tensors: (ids (B, P), attention mask (B, P)) with 0 on padding."""
    ids = torch.nn.utils.rnn.pad_sequence(
        sequences, batch_first=True, padding_value=pad_id, padding_side="left"
    )
    ones = [torch.ones(len(s), dtype=torch.long) for s in sequences]
    mask = torch.nn.utils.rnn.pad_sequence(ones, batch_first=True, padding_value=0, padding_side="left")
    return ids, mask.to(ids.device)


def right_pad(
    sequences: list[torch.Tensor], pad_id: int, length: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D id tensors (to `length` when given): (ids (B, T), mask (B, T))."""
    ids = torch.nn.utils.rnn.pad_sequence(sequences, batch_first=True, padding_value=pad_id)
    mask = torch.nn.utils.rnn.pad_sequence(
        [torch.ones(len(s), dtype=torch.long) for s in sequences], batch_first=True
    ).to(ids.device)
    if length is not None and ids.shape[1] < length:
        extra = length - ids.shape[1]
        ids = torch.nn.functional.pad(ids, (0, extra), value=pad_id)
        mask = torch.nn.functional.pad(mask, (0, extra), value=0)
    return ids, mask


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens (cumulative mask - 1); padding gets 1 as in HF generate."""
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 1)


def cache_layers(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) of each layer, shapes (B, heads, P, head_dim)."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def copy_cache(cache: DynamicCache, repeat: int = 1, detach: bool = False) -> DynamicCache:
    """A new DynamicCache holding the same prompt states, `repeat` times along the batch (row blocks).

    The model appends to a cache in place, so every continuation gets its own copy; without `detach`
    the copy stays in the autograd graph (torch.cat), so losses on the continuation reach the prompt.
    """
    layers = []
    for keys, values in cache_layers(cache):
        if detach:
            keys, values = keys.detach(), values.detach()
        if repeat > 1:
            keys, values = torch.cat([keys] * repeat), torch.cat([values] * repeat)
        layers.append((keys, values))
    return DynamicCache(ddp_cache_data=layers)


def encode_prompts(model, ids: torch.Tensor, mask: torch.Tensor) -> tuple[DynamicCache, torch.Tensor]:
    """One forward of the (left-padded) prompts: (KV cache, logits of the next token (B, V))."""
    out = model(
        input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), use_cache=True, logits_to_keep=1
    )
    return out.past_key_values, out.logits[:, -1]


@dataclass
class SampledTitles:
    """Titles sampled under the trie: right-padded tokens (B, T), their mask, the title id of each
    sample, and log R_p of every taken edge (0 on padding)."""

    tokens: torch.Tensor
    mask: torch.Tensor
    title_ids: torch.Tensor
    edge_log_reward: torch.Tensor


@torch.no_grad()
def sample_continuations(
    model,
    trie: Trie,
    cache: DynamicCache,
    prompt_mask: torch.Tensor,
    first_logits: torch.Tensor,
    pad_id: int,
    temperature: float = 1.0,
    require_flow: bool = False,
    generator: torch.Generator | None = None,
) -> SampledTitles:
    """Sample one title per prompt from the policy, constrained to the trie, on top of a prompt cache.

    `cache` is extended in place (pass a detached copy). require_flow restricts every step to edges
    with positive flow, so that each sampled title has a finite reward (Flower's training samples).
    """
    batch, vocab = first_logits.shape
    device = first_logits.device
    nodes = torch.zeros(batch, dtype=torch.long, device=device)  # the root
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    pad_column = torch.nn.functional.one_hot(torch.tensor(pad_id, device=device), vocab).bool()  # (V,)
    mask = prompt_mask.clone()
    logits = first_logits
    tokens, rewards, active = [], [], []
    for _ in range(int(trie.depth.max())):
        allowed = trie.allowed_mask(nodes, vocab, require_flow=require_flow)  # (B, V)
        if not bool((allowed.any(-1) | finished).all()):
            raise RuntimeError("sampling reached a trie node with no allowed token (no flow below it?)")
        # Finished rows emit padding so that the batch advances together.
        allowed = torch.where(finished.unsqueeze(1), pad_column.unsqueeze(0), allowed)
        scores = (logits.float() / temperature).masked_fill(~allowed, float("-inf"))
        token = torch.multinomial(torch.softmax(scores, -1), 1, generator=generator).squeeze(1)  # (B,)
        reward = trie.edge_log_reward_of(torch.where(finished, 0, nodes), token)
        rewards.append(torch.where(finished, 0.0, reward.float()))
        tokens.append(token)
        active.append(~finished)
        nodes = torch.where(finished, nodes, trie.step(nodes, token))
        finished = finished | trie.is_leaf(nodes)
        if bool(finished.all()):
            break
        mask = torch.cat([mask, active[-1].long().unsqueeze(1)], dim=1)
        out = model(
            input_ids=token.unsqueeze(1),
            attention_mask=mask,
            position_ids=position_ids(mask)[:, -1:],
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        cache, logits = out.past_key_values, out.logits[:, -1]
    if not bool(finished.all()):
        raise RuntimeError("sampling ran past the trie's depth without reaching a title")
    title_ids = torch.as_tensor(trie.node_title, device=device)[nodes]
    return SampledTitles(
        tokens=torch.stack(tokens, 1),
        mask=torch.stack(active, 1),
        title_ids=title_ids,
        edge_log_reward=torch.stack(rewards, 1),
    )


@torch.no_grad()
def sample_titles(
    model,
    trie: Trie,
    prompts: list[list[int]],
    pad_id: int,
    temperature: float = 1.0,
    require_flow: bool = False,
    batch_size: int = 16,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Title ids (n,) sampled for each prompt (one sample each), `batch_size` prompts at a time."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk = [
            torch.tensor(p, dtype=torch.long, device=device) for p in prompts[start : start + batch_size]
        ]
        ids, mask = left_pad(chunk, pad_id)
        cache, logits = encode_prompts(model, ids, mask)
        sampled = sample_continuations(
            model, trie, cache, mask, logits, pad_id, temperature, require_flow, generator
        )
        out.append(sampled.title_ids)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)

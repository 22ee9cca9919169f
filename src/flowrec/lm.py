"""Language-model plumbing shared by sampling, decoding and tuning: padding, positions, the prompt's
KV cache and feeding tokens on top of it.

One convention everywhere: prompts are left-padded with their padding masked, and position ids count
real tokens only (cumulative mask - 1; padding gets 1, as Hugging Face's generate does), so a padded
prompt yields the same next-token distribution as the unpadded one (docs/method.md section 8).
"""

import torch
from transformers import DynamicCache


def left_pad(
    sequences: list[torch.Tensor] | list[list[int]], pad_id: int, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad 1-D id sequences: (ids (B, P), attention mask (B, P)) with 0 on padding."""
    tensors = [torch.as_tensor(s, dtype=torch.long) for s in sequences]
    ids = torch.nn.utils.rnn.pad_sequence(
        tensors, batch_first=True, padding_value=pad_id, padding_side="left"
    )
    ones = [torch.ones(len(s), dtype=torch.long) for s in tensors]
    mask = torch.nn.utils.rnn.pad_sequence(ones, batch_first=True, padding_value=0, padding_side="left")
    if device is not None:
        return ids.to(device), mask.to(device)
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


def pad_to(x: torch.Tensor, length: int, value: float) -> torch.Tensor:
    """Right-pad the last dimension of (B, T) to `length`."""
    return torch.nn.functional.pad(x, (0, length - x.shape[-1]), value=value)


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens (cumulative mask - 1); padding gets 1 as in HF generate."""
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 1)


def cache_layers(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) of each layer, shapes (B, heads, P, head_dim)."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def copy_cache(
    cache: DynamicCache, repeat: int = 1, detach: bool = False, length: int | None = None
) -> DynamicCache:
    """A new DynamicCache holding the same prompt states, `repeat` times along the batch (row blocks),
    of the first `length` positions only when given (the prompt's part of a [prompt ; target] cache).

    The model appends to a cache in place, so every continuation gets its own copy; without `detach`
    the copy stays in the autograd graph (torch.cat), so losses on the continuation reach the prompt.
    """
    layers = []
    for keys, values in cache_layers(cache):
        if length is not None:
            keys, values = keys[:, :, :length], values[:, :, :length]
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


def encode_prompt_states(model, ids: torch.Tensor, mask: torch.Tensor) -> tuple[DynamicCache, torch.Tensor]:
    """One decoder forward of the (left-padded) prompts: (KV cache, last hidden state (B, H)), for
    callers that apply the LM head to a few tokens only (trie-constrained sampling)."""
    out = model.get_decoder()(
        input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), use_cache=True
    )
    return out.past_key_values, out.last_hidden_state[:, -1]


def feed_tokens(
    module, cache: DynamicCache, mask: torch.Tensor, tokens: torch.Tensor, active=None, **forward_kwargs
):
    """Feed one token per row (B,), or k tokens per row (B, k), on top of `cache` (extended in place):
    (module output, new mask).

    `module` is the causal LM (its output has `.logits`) or its decoder (`.last_hidden_state`, for
    callers that apply the LM head to a few tokens only). `active` (tokens' shape) bool marks real
    tokens; the others are fed masked padding so that a batch advances together. `forward_kwargs` go to
    the module (e.g. logits_to_keep=1 for the causal LM).
    """
    tokens = tokens.unsqueeze(1) if tokens.dim() == 1 else tokens
    new = torch.ones_like(tokens) if active is None else active.long().reshape(tokens.shape)
    mask = torch.cat([mask, new.to(mask.dtype)], dim=1)
    out = module(
        input_ids=tokens,
        attention_mask=mask,
        position_ids=position_ids(mask)[:, -tokens.shape[1] :],
        past_key_values=cache,
        use_cache=True,
        **forward_kwargs,
    )
    return out, mask

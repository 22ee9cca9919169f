"""Per-batch forward passes: per-sample SFT loss (BIGRec, IFairLRS) and Flower's SFT and SubTB losses.

Flower step (docs/method.md sections 4 and 8), with the prompt encoded once:
1. one forward of the left-padded prompts, with gradients -> KV cache + next-token logits;
2. a title sampled on-policy (no gradients) from a detached copy of that cache, all samples in
   parallel, constrained to the trie and to edges with positive flow (so every sample has a finite
   reward: a zero-flow title has log R = -inf and no SubTB target);
3. one forward, with gradients, of [target tokens ; sampled tokens] as a 2B batch on top of the prompt
   cache repeated twice, so both losses send gradients into the prompt encoding.
An SFT step is one forward of [prompt ; target]; logits are only computed where a loss needs them.
"""

from collections.abc import Callable

import torch
from transformers import DynamicCache

from flowrec.lm import copy_cache, encode_prompts, pad_to, position_ids
from flowrec.sampling import sample_continuations
from flowrec.trie import Trie
from flowrec.tune.data import Batch
from flowrec.tune.losses import NORMALISATIONS, process_log_rewards, sft_loss, subtb_loss, token_log_probs


def head_log_probs(model, hidden: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log pi of `tokens` (B, T) over the vocabulary, from the decoder states (B, T, H) that predict
    them; 0 where not `mask`. The LM head (the largest matmul of a small model) runs on the real tokens
    only, not on padding."""
    sel = mask.bool()
    logits = model.get_output_embeddings()(hidden[sel])  # (N, V)
    values = token_log_probs(logits.unsqueeze(1), tokens[sel].unsqueeze(1)).squeeze(1)
    return torch.zeros(tokens.shape, dtype=values.dtype, device=values.device).masked_scatter(sel, values)


def children_log_probs(
    trie: Trie, tokens: torch.Tensor, nodes: torch.Tensor, child_logits: Callable
) -> torch.Tensor:
    """log pi of `tokens` (N,) renormalised over the children of the trie states `nodes` (N,) they leave
    (docs/method.md section 4): logit(token) - logsumexp(logits of the children).

    `child_logits(ids, valid)` gives the logits (N, K) of the children's ids (N, K) (any value where not
    `valid`), so only those are computed, never the (N, V) logits. Every token must be a child.
    """
    ids, _, valid = trie.children(nodes)  # (N, K)
    logits = child_logits(ids, valid).float()
    picked = logits.gather(1, ((ids == tokens.unsqueeze(1)) & valid).long().argmax(1, keepdim=True))
    return picked.squeeze(1) - torch.logsumexp(logits.masked_fill(~valid, float("-inf")), dim=-1)


def head_logits_of(model, hidden: torch.Tensor) -> Callable:
    """child_logits for children_log_probs from decoder states `hidden` (N, H): the LM head's rows of
    the valid children only (a linear head without logit post-processing, as sample_continuations)."""
    head = model.get_output_embeddings()

    def child_logits(ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(len(ids), device=ids.device).unsqueeze(1).expand_as(ids)[valid]
        flat = (head.weight[ids[valid]] * hidden[rows]).sum(-1)  # (E,): one dot product per edge
        if getattr(head, "bias", None) is not None:
            flat = flat + head.bias[ids[valid]]
        return flat.new_zeros(ids.shape).masked_scatter(valid, flat)

    return child_logits


def continuation_states(
    model, cache: DynamicCache, prompt_mask: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor | None:
    """Decoder states (R*B, T-1, H) of titles `tokens` (R*B, T) but their last token, fed on top of
    the prompt `cache` of B rows repeated R times (rows r*B + b continue prompt b), with gradients into
    it; None when T = 1 (the last token's state predicts nothing)."""
    if tokens.shape[1] < 2:
        return None
    repeat = len(tokens) // len(prompt_mask)
    full_mask = torch.cat([prompt_mask.repeat(repeat, 1), mask[:, :-1]], dim=1)
    out = model.get_decoder()(
        input_ids=tokens[:, :-1],
        attention_mask=full_mask,
        position_ids=position_ids(full_mask)[:, prompt_mask.shape[1] :],
        past_key_values=copy_cache(cache, repeat=repeat),
        use_cache=True,
    )
    return out.last_hidden_state


def sft_losses(model, batch: Batch) -> torch.Tensor:
    """Per-sample (weighted) SFT loss (B,): cross-entropy on the target tokens only."""
    ids = torch.cat([batch.prompt_ids, batch.target_ids], dim=1)
    mask = torch.cat([batch.prompt_mask, batch.target_mask], dim=1)
    prompt_len, n_target = batch.prompt_ids.shape[1], batch.target_ids.shape[1]
    out = model.get_decoder()(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask))
    # The state at position P-1+t predicts target token t.
    hidden = out.last_hidden_state[:, prompt_len - 1 : prompt_len - 1 + n_target]
    logp = head_log_probs(model, hidden, batch.target_ids, batch.target_mask)  # (B, T)
    return sft_loss(logp, batch.target_mask, batch.weights)


def flower_losses(
    model,
    batch: Batch,
    trie: Trie,
    pad_id: int,
    generator: torch.Generator | None,
    *,
    reward: str,
    sample_temperature: float,
    granularity: int,
    normalise: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample (SFT loss (B,), SubTB loss (B,)) of one Flower step; see the module docstring.

    `reward` is the process-reward variant (plain, div, add), `sample_temperature` the on-policy
    sampler's, `granularity` the SubTB state spacing in tokens, `normalise` what SubTB's log pi is
    normalised over: `children` (the trie state's children, the policy the sampler and the decoder use)
    or `vocab` (the whole vocabulary, as the published code does); docs/method.md section 4.
    """
    if normalise not in NORMALISATIONS:
        raise ValueError(f"flower.normalise: {normalise!r}; expected one of {NORMALISATIONS}")
    cache, first_logits = encode_prompts(model, batch.prompt_ids, batch.prompt_mask)  # (B, V) with grad
    sampled = sample_continuations(
        model,
        trie,
        copy_cache(cache, detach=True),
        batch.prompt_mask,
        first_logits.detach(),
        pad_id,
        temperature=sample_temperature,
        require_flow=True,
        generator=generator,
    )
    # Both titles but their last token (whose state predicts nothing) in one forward of 2B rows on top
    # of the prompt cache repeated twice: one embedding lookup and one pass through the layers.
    target, target_mask = batch.target_ids, batch.target_mask
    tokens, mask, states = sampled.tokens, sampled.mask.long(), sampled.states
    size, length = len(target), max(target.shape[1], tokens.shape[1])
    both = torch.cat([pad_to(target, length, pad_id), pad_to(tokens, length, pad_id)])
    hidden = continuation_states(
        model,
        cache,
        batch.prompt_mask,
        both,
        torch.cat([pad_to(target_mask, length, 0), pad_to(mask, length, 0)]),
    )
    # SFT on the target title: log pi over the vocabulary.
    logp = token_log_probs(first_logits.unsqueeze(1), target[:, :1])  # (B, 1): token 0
    if target.shape[1] > 1:
        rest = head_log_probs(model, hidden[:size, : target.shape[1] - 1], target[:, 1:], target_mask[:, 1:])
        logp = torch.cat([logp, rest], 1)
    sft = sft_loss(logp, target_mask, batch.weights)
    # SubTB on the sampled title: log pi over the trie state's children or the vocabulary (`normalise`).
    if normalise == "children":
        logp = children_log_probs(
            trie, tokens[:, 0], states[:, 0], lambda ids, _: first_logits.gather(1, ids)
        ).unsqueeze(1)
    else:
        logp = token_log_probs(first_logits.unsqueeze(1), tokens[:, :1])
    if tokens.shape[1] > 1:
        hidden = hidden[size:, : tokens.shape[1] - 1]
        if normalise == "children":
            sel = mask[:, 1:].bool()
            values = children_log_probs(
                trie, tokens[:, 1:][sel], states[:, 1:][sel], head_logits_of(model, hidden[sel])
            )
            rest = values.new_zeros(sel.shape).masked_scatter(sel, values)
        else:
            rest = head_log_probs(model, hidden, tokens[:, 1:], mask[:, 1:])
        logp = torch.cat([logp, rest], 1)
    p_ui = None
    if batch.p_ui is not None:
        rows = torch.arange(len(tokens), device=batch.p_ui.device)
        p_ui = batch.p_ui[rows, sampled.title_ids.to(batch.p_ui.device)].float().to(logp.device)
    log_reward = process_log_rewards(sampled.edge_log_reward.to(logp.dtype), p_ui, reward)
    return sft, subtb_loss(logp, log_reward, mask, granularity)

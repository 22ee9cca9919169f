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

import torch

from flowrec.lm import copy_cache, encode_prompts, pad_to, position_ids
from flowrec.sampling import sample_continuations
from flowrec.trie import Trie
from flowrec.tune.data import Batch
from flowrec.tune.losses import NORMALISATIONS, process_log_rewards, sft_loss, subtb_loss, token_log_probs


def head_log_probs(
    model,
    hidden: torch.Tensor,
    tokens: torch.Tensor,
    mask: torch.Tensor,
    trie: Trie | None = None,
    nodes: torch.Tensor | None = None,
) -> torch.Tensor:
    """log pi of `tokens` (B, T) from the decoder states (B, T, H) that predict them, 0 where not `mask`.

    The LM head (the largest matmul of a small model) runs on the real tokens only, not on padding.
    With `trie` and `nodes` (B, T), the trie state each token leaves, log pi is renormalised over that
    state's children (docs/method.md section 4); without them, over the whole vocabulary.
    """
    sel = mask.bool()
    logits = model.get_output_embeddings()(hidden[sel])  # (N, V)
    allowed = None
    if trie is not None:
        allowed = trie.allowed_mask(nodes[sel], logits.shape[-1]).unsqueeze(1)  # (N, 1, V)
    values = token_log_probs(logits.unsqueeze(1), tokens[sel].unsqueeze(1), allowed=allowed).squeeze(1)
    return torch.zeros(tokens.shape, dtype=values.dtype, device=values.device).masked_scatter(sel, values)


def states_before(trie: Trie, tokens: torch.Tensor) -> torch.Tensor:
    """(B, T) trie node each token of the titles `tokens` (B, T) leaves: the root, then the path's nodes."""
    root = torch.zeros(tokens.shape[0], 1, dtype=torch.long, device=tokens.device)
    return torch.cat([root, trie.path_nodes(tokens)[:, :-1]], dim=1)


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
    size, prompt_len = batch.prompt_ids.shape
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
    length = max(batch.target_ids.shape[1], sampled.tokens.shape[1])
    target, target_mask = pad_to(batch.target_ids, length, pad_id), pad_to(batch.target_mask, length, 0)
    sample_ids, sample_mask = pad_to(sampled.tokens, length, pad_id), pad_to(sampled.mask.long(), length, 0)
    cont = torch.cat([target, sample_ids])  # (2B, L)
    cont_mask = torch.cat([target_mask, sample_mask])
    # SubTB's log pi (the sample half): over the trie state's children, or the vocabulary (`normalise`).
    children = normalise == "children"
    nodes = states_before(trie, sample_ids) if children else None
    first_allowed = None
    if children:
        first_allowed = torch.zeros(2 * size, 1, first_logits.shape[-1], dtype=torch.bool, device=cont.device)
        first_allowed[:size] = True  # the SFT half stays normalised over the vocabulary
        first_allowed[size:, 0] = trie.allowed_mask(nodes[:, 0], first_logits.shape[-1])
    first = token_log_probs(first_logits.repeat(2, 1).unsqueeze(1), cont[:, :1], allowed=first_allowed)
    logp = first  # (2B, 1): token 0
    if length > 1:
        # Tokens 0..L-2 are fed on top of the prompt cache (twice: targets and samples); the last
        # token's state predicts nothing, so it is not fed.
        full_mask = torch.cat([batch.prompt_mask.repeat(2, 1), cont_mask[:, :-1]], dim=1)
        out = model.get_decoder()(
            input_ids=cont[:, :-1],
            attention_mask=full_mask,
            position_ids=position_ids(full_mask)[:, prompt_len:],
            past_key_values=copy_cache(cache, repeat=2),
            use_cache=True,
        )
        hidden = out.last_hidden_state  # (2B, L-1, H)
        rest_target = head_log_probs(model, hidden[:size], target[:, 1:], target_mask[:, 1:])
        rest_sample = head_log_probs(
            model,
            hidden[size:],
            sample_ids[:, 1:],
            sample_mask[:, 1:],
            trie if children else None,
            nodes[:, 1:] if children else None,
        )
        logp = torch.cat([first, torch.cat([rest_target, rest_sample])], dim=1)  # (2B, L)
    sft = sft_loss(logp[:size], target_mask, batch.weights)
    edge = pad_to(sampled.edge_log_reward, length, 0.0).to(logp.dtype)
    p_ui = None
    if batch.p_ui is not None:
        rows = torch.arange(size, device=batch.p_ui.device)
        p_ui = batch.p_ui[rows, sampled.title_ids.to(batch.p_ui.device)].float().to(logp.device)
    log_reward = process_log_rewards(edge, p_ui, reward)
    subtb = subtb_loss(logp[size:], log_reward, sample_mask, granularity)
    return sft, subtb

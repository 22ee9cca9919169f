"""Per-batch forward passes: per-sample SFT loss (BIGRec, IFairLRS) and Flower's SFT and SubTB losses.

Flower step (docs/method.md sections 4 and 8), the prompt encoded once:
1. the SFT step's forward of [prompt ; target], with gradients, keeping its KV cache and the logits
   of the root's children after the prompt (sft_with_root_logits);
2. a title sampled on-policy, without gradients, from the prompt's part of that cache, all samples in
   parallel, constrained to the trie and to edges with positive flow (so every sample has a finite
   reward: a zero-flow title has log R = -inf and no SubTB target);
3. one forward with gradients of the sampled title's tokens on the prompt's part of the cache, up to
   its last token that has siblings (sampled_log_probs), so SubTB also reaches the prompt encoding.
An SFT step is the forward of step 1 alone; logits are only computed where a loss needs them.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from flowrec.lm import copy_cache, position_ids
from flowrec.sampling import SampledTitles, sample_continuations
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


# A trie state with at least this share of the vocabulary as children (e.g. after a common first word
# of many titles) is scored with a full row of the LM head: on CPU, forward and backward, one matmul
# row costs about as much as 500 gathered rows of the (V, H) weight (SmolLM2's and the tiny model's).
DENSE_ROW_SHARE = 1 / 64


def head_logits_of(model, hidden: torch.Tensor) -> Callable:
    """child_logits for children_log_probs from decoder states `hidden` (N, H): the LM head's rows of
    the valid children only, or the whole head for states with many children (DENSE_ROW_SHARE); a
    linear head without logit post-processing, as sample_continuations assumes."""
    head = model.get_output_embeddings()
    bias = getattr(head, "bias", None)

    def child_logits(ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        dense = valid.sum(1) >= max(1.0, head.weight.shape[0] * DENSE_ROW_SHARE)  # (N,)
        sparse = valid & ~dense.unsqueeze(1)
        rows = torch.arange(len(ids), device=ids.device).unsqueeze(1).expand_as(ids)[sparse]
        # One dot product per edge; F.embedding's backward accumulates rows faster than indexing's.
        flat = (torch.nn.functional.embedding(ids[sparse], head.weight) * hidden[rows]).sum(-1)  # (E,)
        if bias is not None:
            flat = flat + bias[ids[sparse]]
        logits = flat.float().new_zeros(ids.shape).masked_scatter(sparse, flat.float())
        if bool(dense.any()):
            index = dense.nonzero().squeeze(1)
            full = head(hidden[index]).float().gather(1, ids[index])  # (n, K)
            logits = logits.index_put((index,), full)
        return logits

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


def target_states(model, batch: Batch, keep_cache: bool = False) -> tuple[torch.Tensor, DynamicCache | None]:
    """One forward of [prompt ; target]: the decoder states (B, T, H) that predict the target's tokens
    (the one at P-1+t predicts token t), and with keep_cache the KV cache of the whole sequence."""
    ids = torch.cat([batch.prompt_ids, batch.target_ids], dim=1)
    mask = torch.cat([batch.prompt_mask, batch.target_mask], dim=1)
    prompt_len, n_target = batch.prompt_ids.shape[1], batch.target_ids.shape[1]
    out = model.get_decoder()(
        input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), use_cache=keep_cache
    )
    hidden = out.last_hidden_state[:, prompt_len - 1 : prompt_len - 1 + n_target]
    return hidden, out.past_key_values if keep_cache else None


def sft_losses(model, batch: Batch) -> torch.Tensor:
    """Per-sample (weighted) SFT loss (B,): cross-entropy on the target tokens only."""
    hidden, _ = target_states(model, batch)
    logp = head_log_probs(model, hidden, batch.target_ids, batch.target_mask)  # (B, T)
    return sft_loss(logp, batch.target_mask, batch.weights)


@dataclass
class TargetPass:
    """What the SFT forward of [prompt ; target] leaves for Flower's SubTB: the KV cache, the decoder
    state after each prompt (B, H), the root's children (B, K) and their logits there (B, K), and the
    log-normaliser of the full-vocabulary softmax there (B,)."""

    cache: DynamicCache
    after_prompt: torch.Tensor
    root_ids: torch.Tensor
    root_logits: torch.Tensor
    root_log_norm: torch.Tensor


def sft_with_root_logits(model, batch: Batch, trie: Trie) -> tuple[torch.Tensor, TargetPass]:
    """The per-sample SFT loss (B,) of an SFT step's forward, keeping what SubTB reuses (TargetPass).

    The first target token of each sample is predicted from the state after the prompt, which also
    scores a sampled title's first token among the root's children: one gather reads both from the
    (N, V) logits (a second read would cost a second (N, V) gradient)."""
    hidden, cache = target_states(model, batch, keep_cache=True)
    target, target_mask = batch.target_ids, batch.target_mask.bool()
    logits = model.get_output_embeddings()(hidden[target_mask]).float()  # (N, V), row-major
    n, vocab = logits.shape
    root_ids, _, _ = trie.children(torch.zeros(len(target), dtype=torch.long, device=target.device))
    lengths = target_mask.sum(1)
    first = lengths.cumsum(0) - lengths  # (B,): every target has a first token
    flat = torch.cat(
        [
            torch.arange(n, device=logits.device) * vocab + target[target_mask],
            (first.unsqueeze(1) * vocab + root_ids).reshape(-1),
        ]
    )
    picked = logits.reshape(-1).gather(0, flat)
    log_norm = torch.logsumexp(logits, dim=-1)  # (N,)
    values = picked[:n] - log_norm
    sft = sft_loss(
        values.new_zeros(target.shape).masked_scatter(target_mask, values), target_mask, batch.weights
    )
    root_logits = picked[n:].view(root_ids.shape)
    return sft, TargetPass(cache, hidden[:, 0], root_ids, root_logits, log_norm[first])


def sampled_log_probs(
    model,
    trie: Trie,
    sampled: SampledTitles,
    prompt_cache: DynamicCache,
    prompt_mask: torch.Tensor,
    root: TargetPass,
    normalise: str,
) -> torch.Tensor:
    """log pi (B, T) of each token of the sampled titles, over the trie state's children or the whole
    vocabulary (`normalise`), 0 on padding; the states come from one forward with gradients of the
    titles' tokens on `prompt_cache` (token 0's: the state after the prompt, TargetPass)."""
    tokens, mask = sampled.tokens, sampled.mask
    if normalise == "children":
        # Renormalised over a single child, log pi is exactly 0 with no gradient: only the tokens that
        # leave a state with siblings need a decoder state, so the forward stops at the last of them
        # (a title's unique tail, e.g. its closing year, costs nothing).
        scored = mask & (trie.child_count(sampled.states) > 1)  # (B, T)
        width = int(scored.any(0).nonzero().max()) + 1 if bool(scored.any()) else 1
        logp = children_log_probs(
            trie, tokens[:, 0], sampled.states[:, 0], lambda ids, _: root.root_logits
        ).unsqueeze(1)
    else:
        width = tokens.shape[1]
        slot = (root.root_ids == tokens[:, :1]).long().argmax(1, keepdim=True)
        logp = root.root_logits.gather(1, slot) - root.root_log_norm.unsqueeze(1)
    hidden = continuation_states(model, prompt_cache, prompt_mask, tokens[:, :width], mask[:, :width].long())
    if hidden is not None:  # tokens 1 .. width-1
        if normalise == "children":
            sel = scored[:, 1:width]
            values = children_log_probs(
                trie,
                tokens[:, 1:width][sel],
                sampled.states[:, 1:width][sel],
                head_logits_of(model, hidden[sel]),
            )
            rest = values.new_zeros(sel.shape).masked_scatter(sel, values)
        else:
            rest = head_log_probs(model, hidden, tokens[:, 1:], mask[:, 1:])
        logp = torch.cat([logp, rest], 1)
    return torch.nn.functional.pad(logp, (0, tokens.shape[1] - logp.shape[1]))  # the unique tail: 0


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
    sft, root = sft_with_root_logits(model, batch, trie)
    # The prompt's part of the cache (causal: the target is not in it), as views: a detached one for
    # the sampler, one in the graph for SubTB's forward.
    prompt_len = batch.prompt_ids.shape[1]
    sampled = sample_continuations(
        model,
        trie,
        copy_cache(root.cache, length=prompt_len, detach=True),
        batch.prompt_mask,
        root.after_prompt.detach(),
        pad_id,
        temperature=sample_temperature,
        require_flow=True,
        generator=generator,
    )
    prompt_cache = copy_cache(root.cache, length=prompt_len)
    logp = sampled_log_probs(model, trie, sampled, prompt_cache, batch.prompt_mask, root, normalise)
    p_ui = None
    if batch.p_ui is not None:
        rows = torch.arange(len(logp), device=batch.p_ui.device)
        p_ui = batch.p_ui[rows, sampled.title_ids.to(batch.p_ui.device)].float().to(logp.device)
    log_reward = process_log_rewards(sampled.edge_log_reward.to(logp.dtype), p_ui, reward)
    return sft, subtb_loss(logp, log_reward, sampled.mask, granularity)

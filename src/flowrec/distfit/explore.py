"""Unconstrained exploration for the published RQ1 recipe (docs/method.md sections 6 and 8).

The published RQ1 code samples from the model's policy over the whole vocabulary, not under the trie,
and gives a sequence that leaves the trie a reward of e^-15. Here, all samples of a batch advance in
parallel on top of the prompt cache, and the trie is walked alongside (one `Trie.step` a token):

- a row that reaches a leaf (a whole target title, termination included) stops there, on the trie: its
  per-token log rewards are the trie's log R_p, summing to log R(title) - log F(root);
- a row whose token has no edge on the trie, or an edge into a state without flow, has left it: it
  stops at that first off-trie state, which is terminal with flow e^off_log_reward * F(root). That edge's
  log reward is off_log_reward minus the row's log rewards so far, so the path's total from the root is
  off_log_reward (e^-15 relative to the root flow, as published). Its tokens after leaving are not
  sampled: the off-trie part of a sequence says nothing about the target and trie-constrained decoding
  never goes there, so SubTB has no state past the first off-trie one to fit (the published code fills
  every later token with log reward -15 instead, which trains the off-trie continuation too).

A sequence on the trie is at most the trie's depth long, so the sample needs no other length limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from flowrec.lm import feed_tokens
from flowrec.trie import Trie


@dataclass
class Explored:
    """Sequences sampled over the vocabulary: right-padded tokens (B, T), their mask, per-token log
    rewards (B, T; 0 on padding), and whether each row left the trie (B,)."""

    tokens: torch.Tensor
    mask: torch.Tensor
    edge_log_reward: torch.Tensor
    off_trie: torch.Tensor


@torch.no_grad()
def sample_unconstrained(
    model,
    trie: Trie,
    cache: DynamicCache,
    prompt_mask: torch.Tensor,
    first_logits: torch.Tensor,
    pad_id: int,
    off_log_reward: float,
    generator: torch.Generator | None = None,
) -> Explored:
    """One sequence per prompt from the policy over the whole vocabulary at temperature 1, on top of a
    prompt cache (`cache` is extended in place: pass a detached copy); see the module docstring."""
    batch = first_logits.shape[0]
    device = first_logits.device
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    nodes = torch.zeros(batch, dtype=torch.long, device=device)  # the root
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    off = torch.zeros(batch, dtype=torch.bool, device=device)
    so_far = torch.zeros(batch, dtype=torch.float64, device=device)  # log F(state) - log F(root)
    mask = prompt_mask.clone()
    logits = first_logits
    tokens, rewards, active = [], [], []
    for _ in range(int(trie.depth.max())):
        probs = torch.softmax(logits.float(), -1)
        token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        token = torch.where(finished, pad_id, token)
        child = trie.step(nodes, token)
        child_flow = trie.state_log_flows(child)  # -inf off the trie or without flow
        leaves = ~finished & ~torch.isfinite(child_flow)
        on_edge = child_flow - trie.state_log_flows(nodes)
        edge = torch.where(leaves, off_log_reward - so_far, on_edge)
        edge = torch.where(finished, 0.0, edge)
        so_far = so_far + edge
        rewards.append(edge)
        tokens.append(token)
        active.append(~finished)
        off = off | leaves
        nodes = torch.where(finished | leaves, nodes, child)
        finished = finished | leaves | trie.is_leaf(nodes)
        if bool(finished.all()):
            break
        out, mask = feed_tokens(decoder, cache, mask, token, active=active[-1])
        logits = head(out.last_hidden_state[:, -1])  # (B, V): the whole vocabulary is the policy
    if not bool(finished.all()):
        raise RuntimeError("exploration ran past the trie's depth without ending or leaving the trie")
    return Explored(
        tokens=torch.stack(tokens, 1),
        mask=torch.stack(active, 1),
        edge_log_reward=torch.stack(rewards, 1),
        off_trie=off,
    )

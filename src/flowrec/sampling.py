"""Trie-constrained sampling of titles with a KV cache (Flower's on-policy samples, distribution fitting).

The prompt is encoded once and the sampled tokens are fed on top of its cache (flowrec.lm: left
padding, positions over real tokens), so a padded prompt samples as the unpadded one would.
All samples of a batch advance in parallel: each step reads the children of every row's trie node from
the trie's CSR arrays (Trie.children) and scores only those tokens; tokens are fed only when a step has
a choice, and once no row has one left, the rest of every title is read from the trie at once.
"""

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from flowrec.lm import (
    copy_cache,
    encode_prompt_states,
    encode_prompts,
    feed_tokens,
    left_pad,
    position_ids,
    right_pad,
)
from flowrec.trie import Trie


@dataclass
class SampledTitles:
    """Titles sampled under the trie: right-padded tokens (B, T), their mask, the title id of each
    sample, log R_p of every taken edge (0 on padding) and the trie node each token leaves (the
    title's last node on padding)."""

    tokens: torch.Tensor
    mask: torch.Tensor
    title_ids: torch.Tensor
    edge_log_reward: torch.Tensor
    states: torch.Tensor


def allowed_ids(allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack a (B, V) bool mask into token ids (B, K) and a validity mask (B, K), K = most allowed in a row."""
    counts = allowed.sum(-1)  # (B,)
    width = max(int(counts.max()), 1)
    rows, cols = allowed.nonzero(as_tuple=True)  # row-major: a row's tokens are contiguous
    slot = torch.arange(len(rows), device=allowed.device) - (counts.cumsum(0) - counts)[rows]
    ids = torch.zeros(allowed.shape[0], width, dtype=torch.long, device=allowed.device)
    valid = torch.zeros(allowed.shape[0], width, dtype=torch.bool, device=allowed.device)
    ids[rows, slot] = cols
    valid[rows, slot] = True
    return ids, valid


@torch.no_grad()
def sample_continuations(
    model,
    trie: Trie,
    cache: DynamicCache,
    prompt_mask: torch.Tensor,
    hidden: torch.Tensor,
    pad_id: int,
    temperature: float = 1.0,
    require_flow: bool = False,
    generator: torch.Generator | None = None,
) -> SampledTitles:
    """Sample one title per prompt from the policy, constrained to the trie, on top of a prompt cache.

    `cache` holds the prompts and is extended in place (pass a detached copy); `hidden` (B, H) is the
    decoder's last state after each prompt. A step where every row has one allowed token needs no
    logits, so its tokens are fed later, together with the next ones that do. require_flow restricts
    every step to edges with positive flow, so that each sampled title has a finite reward (Flower's
    training samples). Constrained sampling only needs the logits of the allowed tokens (the softmax
    is renormalised over them), so each scored step multiplies the decoder state with the output
    embeddings of those few tokens instead of the whole vocabulary (the LM head is the largest matmul
    of a small model). This assumes a linear LM head without logit post-processing (Llama, Qwen,
    SmolLM).
    """
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    if trie.max_token >= head.weight.shape[0]:
        raise ValueError(f"trie holds token id {trie.max_token}, not below vocab_size {head.weight.shape[0]}")
    weight, bias = head.weight, getattr(head, "bias", None)
    batch, device = hidden.shape[0], hidden.device
    nodes = torch.zeros(batch, dtype=torch.long, device=device)  # the root
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    mask = prompt_mask.clone()
    tokens, rewards, active, states = [], [], [], []  # (B, k) blocks: one column a step, then the rest
    fed = 0  # tokens[:fed] are in the cache; `hidden` is the state after them
    for _ in range(int(trie.depth.max())):
        sole = trie.sole_title(nodes, require_flow)  # (B,)
        if bool((finished | (sole >= 0)).all()):
            # Every row's remaining path is forced (one title, one with flow under require_flow, below
            # its node; below the first tokens most are): read the rest of each title from the trie at
            # once instead of a step per token.
            block, nodes = forced_rest(trie, nodes, sole, finished, pad_id)
            for _ in range(block.tokens.shape[1]):  # the draws of the steps it replaces: same stream
                torch.multinomial(torch.ones(batch, 1, device=device), 1, generator=generator)
            tokens.append(block.tokens)
            rewards.append(block.edge_log_reward)
            active.append(block.mask)
            states.append(block.states)
            finished = torch.ones_like(finished)
            break
        # The children of each row's node, read from the trie's CSR (no (B, V) mask): finished rows
        # sit at a leaf and have none.
        ids, child, valid = trie.children(nodes, require_flow=require_flow)  # (B, K)
        if not bool((valid[:, 0] | finished).all()):
            raise RuntimeError("sampling reached a trie node with no allowed token (no flow below it?)")
        if ids.shape[1] == 1:
            # Every row has one choice: no logits needed, and the tokens wait to be fed with the next
            # ones that do need them. The one-token draw keeps the generator's stream as if the step
            # had been scored.
            choice = torch.multinomial(torch.ones(batch, 1, device=device), 1, generator=generator)
        else:
            if fed < len(tokens):  # the tokens taken since the last scored step, in one forward
                out, mask = feed_tokens(
                    decoder, cache, mask, torch.cat(tokens[fed:], 1), active=torch.cat(active[fed:], 1)
                )
                cache, hidden, fed = out.past_key_values, out.last_hidden_state[:, -1], len(tokens)
            logits = (weight[ids] @ hidden.unsqueeze(-1).to(weight.dtype)).squeeze(-1)  # (B, K)
            if bias is not None:
                logits = logits + bias[ids]
            scores = (logits.float() / temperature).masked_fill(~valid, float("-inf"))
            # Finished rows (no allowed token) emit padding so that the batch advances together.
            scores[:, 0] = torch.where(finished, 0.0, scores[:, 0])
            choice = torch.multinomial(torch.softmax(scores, -1), 1, generator=generator)  # (B, 1)
        token = torch.where(finished, pad_id, ids.gather(1, choice).squeeze(1))
        reached = child.gather(1, choice).squeeze(1)
        rewards.append(torch.where(finished, 0.0, trie.log_reward_into(reached).float()).unsqueeze(1))
        tokens.append(token.unsqueeze(1))
        active.append((~finished).unsqueeze(1))
        states.append(nodes.unsqueeze(1))
        nodes = torch.where(finished, nodes, reached)
        finished = finished | trie.is_leaf(nodes)
        if bool(finished.all()):
            break
    if not bool(finished.all()):
        raise RuntimeError("sampling ran past the trie's depth without reaching a title")
    return SampledTitles(
        tokens=torch.cat(tokens, 1),
        mask=torch.cat(active, 1),
        title_ids=trie.title_of(nodes),
        edge_log_reward=torch.cat(rewards, 1),
        states=torch.cat(states, 1),
    )


def forced_rest(
    trie: Trie, nodes: torch.Tensor, titles: torch.Tensor, finished: torch.Tensor, pad_id: int
) -> tuple[SampledTitles, torch.Tensor]:
    """The rest of each unfinished row's path, from its node `nodes` (B,) to the leaf of `titles` (B,),
    as a block in SampledTitles' layout (finished rows: padding), and each row's leaf node (B,)."""
    width = trie.title_paths.shape[1] - int(trie.depth_of(nodes).min())
    path = trie.rest_of_titles(nodes, titles.clamp_min(0), width)  # (B, width)
    live = (path >= 0) & ~finished.unsqueeze(1)
    width = int(live.sum(1).max())
    path, live = path[:, :width], live[:, :width]
    last = path.gather(1, (live.sum(1, keepdim=True) - 1).clamp_min(0)).squeeze(1)
    leaf = torch.where(finished, nodes, last)
    before = torch.cat([nodes.unsqueeze(1), path[:, :-1]], 1)  # the node each token leaves
    block = SampledTitles(
        tokens=torch.where(live, trie.token_into(path), pad_id),
        mask=live,
        title_ids=trie.title_of(leaf),
        edge_log_reward=torch.where(live, trie.log_reward_into(path).float(), 0.0),
        states=torch.where(live, before, leaf.unsqueeze(1)),
    )
    return block, leaf


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
        ids, mask = left_pad(prompts[start : start + batch_size], pad_id, device)
        cache, hidden = encode_prompt_states(model, ids, mask)
        sampled = sample_continuations(
            model, trie, cache, mask, hidden, pad_id, temperature, require_flow, generator
        )
        out.append(sampled.title_ids)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


@torch.no_grad()
def title_log_probs(
    model, trie: Trie, prompt: list[int], pad_id: int, temperature: float = 1.0, batch_size: int = 64
) -> torch.Tensor:
    """Exact log-probability (n_titles,) that trie-constrained sampling from `prompt` yields each title.

    At every step the sampler renormalises the temperature-scaled softmax over the trie's allowed
    tokens, so a title's probability is the product of those renormalised token probabilities along its
    path. The prompt is encoded once; titles are scored `batch_size` at a time on copies of its cache.
    """
    device = next(model.parameters()).device
    ids, prompt_mask = left_pad([prompt], pad_id, device)  # one prompt: no padding, mask all ones
    cache, first = encode_prompts(model, ids, prompt_mask)
    out = []
    for start in range(0, trie.n_titles, batch_size):
        titles = range(start, min(start + batch_size, trie.n_titles))
        paths = [torch.tensor(trie.title_token_ids(t), device=device) for t in titles]
        tokens, mask = right_pad(paths, pad_id)  # (n, L)
        n, length = tokens.shape
        logits = first.expand(n, -1).unsqueeze(1)
        if length > 1:
            # The title's tokens but its last (whose logits are not needed) follow the prompt on its cache.
            full = torch.cat([prompt_mask.expand(n, -1), mask[:, :-1]], 1)
            more = model(
                input_ids=tokens[:, :-1],
                attention_mask=full,
                position_ids=position_ids(full)[:, ids.shape[1] :],
                past_key_values=copy_cache(cache, repeat=n),
                use_cache=True,
            ).logits
            logits = torch.cat([logits, more], 1)  # (n, L, V)
        nodes = torch.zeros(n, dtype=torch.long, device=device)
        total = torch.zeros(n, dtype=torch.float64, device=device)
        for t in range(length):
            allowed = trie.allowed_mask(nodes.clamp_min(0), logits.shape[-1])
            scores = (logits[:, t].float() / temperature).masked_fill(~allowed, float("-inf"))
            logp = torch.log_softmax(scores, -1).gather(1, tokens[:, t : t + 1]).squeeze(1)
            total += torch.where(mask[:, t].bool(), logp.double(), 0.0)
            nodes = torch.where(mask[:, t].bool(), trie.step(nodes, tokens[:, t]), nodes)
        out.append(total)
    return torch.cat(out)

"""Trie-constrained sampling with a KV cache, and the shared-prompt Flower forward (flowrec.sampling)."""

import numpy as np
import pytest
import torch

from flowrec.lm import copy_cache, encode_prompt_states, encode_prompts, left_pad, position_ids
from flowrec.model import load_tokenizer, tiny_random_model
from flowrec.prompts import history_free_prompt_ids, prompt_ids, title_ids_batch
from flowrec.sampling import allowed_ids, sample_continuations, sample_titles
from flowrec.trie import Trie
from flowrec.tune.data import Batch
from flowrec.tune.forward import flower_losses, sft_losses
from flowrec.tune.losses import process_log_rewards, subtb_loss, token_log_probs

TITLES = ["Toy Story", "Toy Story 2", "Heat", "Casino", "Fargo", "Babe"]
REWARDS = [5.0, 1.0, 0.0, 3.0, 0.0, 1.0]  # Heat and Fargo never occur in histories: no flow


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    tokenizer = load_tokenizer("tiny-random")
    model = tiny_random_model(tokenizer, seed=0).eval()
    trie = Trie.build(TITLES, title_ids_batch(tokenizer, TITLES), REWARDS)
    return tokenizer, model, trie


def prompts(tokenizer) -> list[list[int]]:
    return [
        prompt_ids(tokenizer, ["Heat", "Casino"], 10),
        history_free_prompt_ids(tokenizer),
        prompt_ids(tokenizer, ["Babe", "Toy Story", "Fargo", "Heat"], 10),
    ]


def test_left_padding_and_cache_give_the_unpadded_logits(setup):
    tokenizer, model, _ = setup
    batch = prompts(tokenizer)
    ids, mask = left_pad([torch.tensor(p) for p in batch], tokenizer.pad_token_id)
    assert (mask.sum(1) == torch.tensor([len(p) for p in batch])).all() and mask[:, -1].all()
    with torch.no_grad():
        _, logits = encode_prompts(model, ids, mask)
        for i, p in enumerate(batch):
            alone = model(input_ids=torch.tensor([p])).logits[0, -1]
            assert torch.allclose(logits[i], alone, atol=1e-4)


def test_sampling_stays_in_trie_and_ends_at_rewarded_titles(setup):
    tokenizer, model, trie = setup
    batch = prompts(tokenizer) * 8
    gen = torch.Generator().manual_seed(0)
    ids, mask = left_pad([torch.tensor(p) for p in batch], tokenizer.pad_token_id)
    with torch.no_grad():
        cache, hidden = encode_prompt_states(model, ids, mask)
    out = sample_continuations(
        model, trie, cache, mask, hidden, tokenizer.pad_token_id, require_flow=True, generator=gen
    )
    assert (out.title_ids >= 0).all()
    for row, title in enumerate(out.title_ids.tolist()):
        n = int(out.mask[row].sum())
        assert out.mask[row, :n].all() and not out.mask[row, n:].any()  # finished rows stay padded
        assert out.tokens[row, :n].tolist() == trie.title_token_ids(title)  # a real title's path
        assert trie.title_reward[title] > 0  # only titles with flow
        # The summed process rewards telescope to log R(title) - log F(root).
        want = np.log(trie.title_reward[title]) - np.log(trie.flow[0])
        assert out.edge_log_reward[row].sum().item() == pytest.approx(want)
    # Without the flow restriction, zero-flow titles can come out too, and still only real titles.
    free = sample_titles(model, trie, batch * 4, tokenizer.pad_token_id, generator=gen)
    assert set(free.tolist()) <= set(range(trie.n_titles))
    assert any(trie.title_reward[t] == 0 for t in free.tolist())


def test_flower_forward_matches_one_pass_and_reaches_parameters(setup):
    tokenizer, model, trie = setup
    model = tiny_random_model(tokenizer, seed=1)
    batch_prompts = prompts(tokenizer)
    target_titles = [0, 3, 5]
    ids, mask = left_pad([torch.tensor(p) for p in batch_prompts], tokenizer.pad_token_id)
    targets = [torch.tensor(trie.title_token_ids(t)) for t in target_titles]
    tgt = torch.nn.utils.rnn.pad_sequence(targets, batch_first=True, padding_value=tokenizer.pad_token_id)
    tmask = torch.nn.utils.rnn.pad_sequence(
        [torch.ones(len(t), dtype=torch.long) for t in targets], batch_first=True
    )
    batch = Batch(ids, mask, tgt, tmask, torch.ones(3), None)
    sft, subtb = flower_losses(
        model,
        batch,
        trie,
        tokenizer.pad_token_id,
        torch.Generator().manual_seed(0),
        reward="plain",
        sample_temperature=1.0,
        granularity=1,
        normalise="children",
    )
    # The SFT part computed on top of the shared prompt cache equals a plain one-pass SFT forward.
    assert torch.allclose(sft, sft_losses(model, batch), atol=1e-4)
    assert (subtb > 0).all()
    (sft.sum() + subtb.sum()).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_copy_cache_repeats_rows_and_keeps_the_graph(setup):
    tokenizer, model, _ = setup
    ids, mask = left_pad([torch.tensor(p) for p in prompts(tokenizer)], tokenizer.pad_token_id)
    cache, _ = encode_prompts(tiny_random_model(tokenizer, seed=2), ids, mask)
    doubled = copy_cache(cache, repeat=2)
    keys = cache.layers[0].keys
    assert doubled.layers[0].keys.shape[0] == 2 * keys.shape[0]
    assert torch.equal(doubled.layers[0].keys[3:], keys) and doubled.layers[0].keys.requires_grad
    assert not copy_cache(cache, detach=True).layers[0].keys.requires_grad
    assert token_log_probs(torch.zeros(1, 1, 4), torch.tensor([[2]])).item() == pytest.approx(-np.log(4))


@pytest.mark.parametrize("normalise", ["children", "vocab"])
def test_flower_subtb_scores_the_policy_it_names(setup, monkeypatch, normalise):
    """With one segment (granularity above the title length), SubTB of a sampled title is
    (log pi(title) - log R(title) / F(root))^2; with `children`, pi is the trie-constrained policy the
    sampler draws from and the decoder uses (title_log_probs), zero-flow siblings included."""
    import flowrec.tune.forward as forward
    from flowrec.sampling import title_log_probs

    tokenizer, model, trie = setup
    drawn = []

    def recording(*args, **kwargs):
        drawn.append(sample_continuations(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(forward, "sample_continuations", recording)
    batch_prompts = prompts(tokenizer)
    ids, mask = left_pad([torch.tensor(p) for p in batch_prompts], tokenizer.pad_token_id)
    target = torch.tensor([trie.title_token_ids(0)] * 3)
    batch = Batch(ids, mask, target, torch.ones_like(target), torch.ones(3), None)
    with torch.no_grad():
        _, subtb = flower_losses(
            model,
            batch,
            trie,
            tokenizer.pad_token_id,
            torch.Generator().manual_seed(3),
            reward="plain",
            sample_temperature=1.0,
            granularity=100,
            normalise=normalise,
        )
    titles = drawn[0].title_ids.tolist()
    log_target = np.log(trie.title_reward / trie.title_reward.sum())
    log_q = [
        float(title_log_probs(model, trie, p, tokenizer.pad_token_id)[t])
        for p, t in zip(batch_prompts, titles, strict=True)
    ]
    expected = torch.tensor(
        [(q - log_target[t]) ** 2 for q, t in zip(log_q, titles, strict=True)], dtype=subtb.dtype
    )
    if normalise == "children":
        assert torch.allclose(subtb, expected, rtol=1e-4, atol=1e-5)
    else:  # mass off the trie lowers log pi below the trie-constrained one: another residual
        assert not torch.allclose(subtb, expected, rtol=1e-2)


def reference_samples(model, trie, ids, mask, pad_id, generator, require_flow=True) -> torch.Tensor:
    """Trie-constrained sampling the plain way: the whole [prompt ; title so far] through the model
    every step, a (B, V) mask of the flowing children, the packed ids drawn as the sampler draws them."""

    nodes = torch.zeros(len(ids), dtype=torch.long)
    done = torch.zeros(len(ids), dtype=torch.bool)
    tokens = []
    while not bool(done.all()):
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).logits[:, -1]
        allowed = trie.allowed_mask(nodes, logits.shape[-1], require_flow=require_flow)
        packed, valid = allowed_ids(allowed)
        scores = logits.gather(1, packed).masked_fill(~valid, float("-inf"))
        scores[:, 0] = torch.where(done, 0.0, scores[:, 0])
        choice = torch.multinomial(torch.softmax(scores, -1), 1, generator=generator)
        token = torch.where(done, pad_id, packed.gather(1, choice).squeeze(1))
        tokens.append(token)
        nodes = torch.where(done, nodes, trie.step(nodes, token))
        ids = torch.cat([ids, token.unsqueeze(1)], 1)
        mask = torch.cat([mask, (~done).long().unsqueeze(1)], 1)
        done = done | trie.is_leaf(nodes)
    return torch.stack(tokens, 1)


@pytest.mark.parametrize("require_flow", [True, False])
def test_sampler_draws_what_the_plain_masked_sampler_draws(setup, require_flow):
    """The sampler reads children from the trie's CSR, feeds tokens on a KV cache only where a step has
    a choice and reads forced title tails from the trie at once; with the same generator it draws the
    same titles, with the same rewards and states, as full forwards and (B, V) masks at every step do."""
    tokenizer, model, trie = setup
    batch = prompts(tokenizer) * 4
    ids, mask = left_pad([torch.tensor(p) for p in batch], tokenizer.pad_token_id)
    with torch.no_grad():
        cache, hidden = encode_prompt_states(model, ids, mask)
    for seed in range(3):
        mine = torch.Generator().manual_seed(seed)
        out = sample_continuations(
            model,
            trie,
            cache if seed == 0 else encode_prompt_states(model, ids, mask)[0],
            mask,
            hidden,
            tokenizer.pad_token_id,
            require_flow=require_flow,
            generator=mine,
        )
        gen = torch.Generator().manual_seed(seed)
        want = reference_samples(model, trie, ids, mask, tokenizer.pad_token_id, gen, require_flow)
        assert torch.equal(out.tokens, want)
        lengths = torch.tensor([len(trie.title_token_ids(t)) for t in out.title_ids.tolist()])
        assert torch.equal(out.mask.sum(1), lengths)
        # the generator is left where the step-by-step sampler leaves it
        assert torch.rand(1, generator=mine).item() == torch.rand(1, generator=gen).item()
        edge = trie.edge_log_reward_of(out.states.clamp_min(0), out.tokens).float()
        assert torch.equal(out.edge_log_reward, edge.masked_fill(~out.mask, 0.0))
        # the states each token leaves: the root, then the path's nodes (the leaf on padding)
        path = trie.path_nodes(out.tokens)
        assert torch.equal(out.states[:, 0], torch.zeros(len(batch), dtype=torch.long))
        assert torch.equal(out.states[:, 1:][out.mask[:, 1:]], path[:, :-1][out.mask[:, 1:]])


@pytest.mark.parametrize(
    ("normalise", "dense_rows"), [("children", False), ("children", True), ("vocab", False)]
)
def test_flower_losses_and_gradients_match_a_plain_reference(setup, monkeypatch, normalise, dense_rows):
    """Flower's step (prompt encoded once in the SFT forward, the sampled title on its cache up to its
    last token with siblings, children's head rows only, or whole head rows for states with many
    children: dense_rows) against the plain computation: one full forward of [prompt ; title] per
    title, (B, T, V) logits, (B, T, V) children masks, rewards looked up in the trie; same losses and
    same gradients."""
    import flowrec.tune.forward as forward

    if dense_rows:
        monkeypatch.setattr(forward, "DENSE_ROW_SHARE", 0.0)
    tokenizer, _, trie = setup
    pad = tokenizer.pad_token_id
    drawn = []

    def recording(*args, **kwargs):
        drawn.append(sample_continuations(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(forward, "sample_continuations", recording)
    ids, mask = left_pad([torch.tensor(p) for p in prompts(tokenizer)], pad)
    targets = [torch.tensor(trie.title_token_ids(t)) for t in (0, 3, 5)]
    tgt = torch.nn.utils.rnn.pad_sequence(targets, batch_first=True, padding_value=pad)
    tmask = (torch.arange(tgt.shape[1]) < torch.tensor([len(t) for t in targets]).unsqueeze(1)).long()
    p_ui = torch.rand(3, trie.n_titles, generator=torch.Generator().manual_seed(1)) + 0.5
    batch = Batch(ids, mask, tgt, tmask, torch.tensor([1.0, 0.5, 2.0]), p_ui)
    model = tiny_random_model(tokenizer, seed=4)
    gen = torch.Generator().manual_seed(5)
    sft, subtb = flower_losses(
        model, batch, trie, pad, gen, reward="div", sample_temperature=1.0, granularity=1, normalise=normalise
    )
    (sft.sum() + 0.3 * subtb.sum()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    sampled = drawn[0]
    tokens, smask = sampled.tokens, sampled.mask.long()
    full_ids, full_mask = torch.cat([ids, tokens], 1), torch.cat([mask, smask], 1)
    logits = model(input_ids=full_ids, attention_mask=full_mask, position_ids=position_ids(full_mask)).logits
    logits = logits[:, ids.shape[1] - 1 : -1]  # (B, T, V): the state before each sampled token
    states = torch.cat([torch.zeros(3, 1, dtype=torch.long), trie.path_nodes(tokens)[:, :-1]], 1)
    allowed = None
    if normalise == "children":
        allowed = trie.allowed_mask(states.clamp_min(0).reshape(-1), logits.shape[-1]).view(logits.shape)
        allowed |= ~smask.bool().unsqueeze(-1)  # padding: any finite value, masked by the loss
    log_pi = token_log_probs(logits, tokens, allowed=allowed)
    edge = trie.edge_log_reward_of(states.clamp_min(0), tokens).float().masked_fill(~smask.bool(), 0.0)
    log_reward = process_log_rewards(edge, p_ui[torch.arange(3), sampled.title_ids], "div")
    want_subtb = subtb_loss(log_pi, log_reward, smask, 1)
    want_sft = sft_losses(model, batch)
    (want_sft.sum() + 0.3 * want_subtb.sum()).backward()
    assert torch.allclose(sft, want_sft, rtol=1e-5, atol=1e-5)
    assert torch.allclose(subtb, want_subtb, rtol=1e-4, atol=1e-4) and (subtb > 0).all()
    for name, param in model.named_parameters():
        assert torch.allclose(grads[name], param.grad, rtol=1e-3, atol=1e-5), name

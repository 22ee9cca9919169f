"""Trie-constrained sampling with a KV cache, and the shared-prompt Flower forward (flowrec.sampling)."""

import numpy as np
import pytest
import torch

from flowrec.lm import copy_cache, encode_prompts, left_pad
from flowrec.model import load_tokenizer, tiny_random_model
from flowrec.prompts import history_free_prompt_ids, prompt_ids, title_ids_batch
from flowrec.sampling import sample_continuations, sample_titles
from flowrec.trie import Trie
from flowrec.tune.data import Batch
from flowrec.tune.forward import flower_losses, sft_losses
from flowrec.tune.losses import token_log_probs

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
        cache, logits = encode_prompts(model, ids, mask)
    out = sample_continuations(
        model, trie, cache, mask, logits, tokenizer.pad_token_id, require_flow=True, generator=gen
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

"""RQ3's preference alignment (docs/method.md section 10): the losses on hand-computed cases, the
preference sampler's distributions, and each method's own promise on a tiny model."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from flowrec.model import tiny_random_model
from flowrec.prompts import prompt_ids_batch
from flowrec.sampling import title_log_probs
from flowrec.trie import build_trie
from flowrec.tune.alignment import PPOLoss
from flowrec.tune.alignment_losses import (
    dmpo_loss,
    dpo_loss,
    gae,
    ppo_loss,
    ppo_token_rewards,
    sdpo_loss,
    whiten,
)
from flowrec.tune.data import build_tune_data
from flowrec.tune.loop import TrainPaths, train
from flowrec.tune.objectives import make_loss
from flowrec.tune.preferences import draw_negatives, popularity_negatives, uniform_negatives
from flowrec.tune.settings import TuneSettings


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# --- the losses on hand-computed cases ---


def test_dpo_on_a_hand_computed_case():
    # -log sigmoid(beta (r_c - r_rej)) = log(1 + exp(-beta (r_c - r_rej)))
    got = dpo_loss(torch.tensor([1.0, -0.5]), torch.tensor([0.0, 0.5]), beta=0.5)
    assert got.tolist() == pytest.approx([softplus(-0.5), softplus(0.5)], rel=1e-6)


def test_sdpo_with_one_negative_equals_dpo():
    gen = torch.Generator().manual_seed(0)
    r_c, r_rej = (
        torch.randn(16, generator=gen, dtype=torch.float64),
        torch.randn(16, generator=gen, dtype=torch.float64),
    )
    for beta in (0.1, 0.3, 2.0):
        assert torch.allclose(
            sdpo_loss(r_c, r_rej.unsqueeze(1), beta), dpo_loss(r_c, r_rej, beta), atol=1e-12
        )


def test_sdpo_on_a_hand_computed_case():
    # Three negatives level with the chosen title: -log sigmoid(-log 3) = log(1 + 3).
    assert sdpo_loss(torch.zeros(1), torch.zeros(1, 3), 1.0).item() == pytest.approx(math.log(4), rel=1e-6)
    # r_c = 1, r = [0, 2], beta = 0.5: -log sigmoid(-log(e^-0.5 + e^0.5)) = log(1 + e^-0.5 + e^0.5)
    got = sdpo_loss(torch.tensor([1.0]), torch.tensor([[0.0, 2.0]]), 0.5).item()
    assert got == pytest.approx(math.log(1 + math.exp(-0.5) + math.exp(0.5)), rel=1e-6)


def test_dmpo_sums_or_averages_the_margins():
    r_c, r_rej = torch.tensor([1.0]), torch.tensor([[0.0, 0.5, 2.0]])  # margins 1, 0.5, -1: sum 0.5
    assert dmpo_loss(r_c, r_rej, 0.3, "sum").item() == pytest.approx(softplus(-0.3 * 0.5), rel=1e-6)
    assert dmpo_loss(r_c, r_rej, 0.3, "mean").item() == pytest.approx(softplus(-0.3 * 0.5 / 3), rel=1e-6)
    # with one negative both are DPO
    one = torch.tensor([[0.25]])
    assert dmpo_loss(r_c, one, 0.3, "sum").item() == pytest.approx(dpo_loss(r_c, one[:, 0], 0.3).item())
    with pytest.raises(ValueError, match="dmpo_reduce"):
        dmpo_loss(r_c, r_rej, 0.3, "max")


def test_ppo_clipped_objective_on_a_toy():
    # ratios 1.5, 1.5, 0.5 with advantages +1, -1, +1 and clip 0.2:
    # max(-1.5, -1.2) = -1.2;  max(1.5, 1.2) = 1.5;  max(-0.5, -0.8) = -0.5
    old = torch.zeros(3, 1)
    logp = torch.log(torch.tensor([[1.5], [1.5], [0.5]]))
    adv = torch.tensor([[1.0], [-1.0], [1.0]])
    values = torch.tensor([[2.0], [1.0], [1.0]])
    old_values = torch.tensor([[1.0], [1.0], [1.0]])
    returns = torch.tensor([[0.0], [1.0], [1.0]])
    mask = torch.ones(3, 1)
    policy, value = ppo_loss(logp, old, adv, values, old_values, returns, mask, clip=0.2, vf_coef=0.1)
    assert policy.tolist() == pytest.approx([-1.2, 1.5, -0.5], rel=1e-6)
    # value 2 from old value 1 with return 0: max((2-0)^2, (1.2-0)^2) = 4, halved, times vf_coef
    assert value.tolist() == pytest.approx([0.2, 0.0, 0.0], abs=1e-7)


def test_ppo_kl_penalty_and_score_on_a_toy():
    logp = torch.tensor([[-1.0, -2.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, 0.0]])
    mask = torch.tensor([[1, 1, 0]])  # the third position is padding
    rewards = ppo_token_rewards(logp, ref, torch.tensor([0.7]), mask, kl_coef=0.9)
    # -0.9 |(-1) - (-1.5)| = -0.45;  -0.9 |(-2) - (-1)| + 0.7 (the score, on the last token) = -0.2
    assert rewards.tolist()[0] == pytest.approx([-0.45, -0.2, 0.0], abs=1e-6)


def test_gae_on_a_hand_computed_case():
    rewards = torch.tensor([[0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.2, 9.0]])  # the padding's value never enters
    mask = torch.tensor([[1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    # t=1: delta = 1 + 0 - 0.2 = 0.8;  t=0: delta = 0 + 0.2 - 0.5 = -0.3, A = -0.3 + 0.95 * 0.8 = 0.46
    assert adv.tolist()[0] == pytest.approx([0.46, 0.8, 0.0], abs=1e-6)
    assert ret.tolist()[0] == pytest.approx([0.96, 1.0, 0.0], abs=1e-6)
    white = whiten(adv, mask)
    assert float((white * mask).sum()) == pytest.approx(0.0, abs=1e-6)


# --- the preference sampler ---


def test_uniform_negatives_are_distinct_exclude_the_target_and_are_uniform():
    n_titles, k = 7, 3
    targets = np.random.default_rng(0).integers(0, n_titles, size=60_000)
    picks = uniform_negatives(targets, n_titles, k, np.random.default_rng(1))
    assert picks.shape == (len(targets), k)
    assert not (picks == targets[:, None]).any()
    assert (np.sort(picks, 1)[:, 1:] != np.sort(picks, 1)[:, :-1]).all()  # distinct within a row
    assert picks.min() >= 0 and picks.max() < n_titles
    # for target 2, every other title is drawn with probability k / (n_titles - 1)
    rows = picks[targets == 2]
    freq = np.bincount(rows.ravel(), minlength=n_titles) / len(rows)
    expected = np.full(n_titles, k / (n_titles - 1))
    expected[2] = 0.0
    tolerance = 5 * np.sqrt(0.25 / len(rows))  # five standard errors of a share near 1/2
    assert np.abs(freq - expected).max() < tolerance


def test_popularity_negatives_follow_the_counts_without_the_target():
    counts = np.array([5.0, 0.0, 3.0, 2.0, 0.0, 10.0])
    targets = np.repeat([0, 5, 1], 40_000)
    picks = popularity_negatives(targets, counts, np.random.default_rng(2))[:, 0]
    assert not (picks == targets).any()
    assert not np.isin(picks, [1, 4]).any()  # never in a training history: never drawn
    for target in (0, 5, 1):
        rest = counts.copy()
        rest[target] = 0.0
        freq = np.bincount(picks[targets == target], minlength=len(counts)) / 40_000
        assert np.abs(freq - rest / rest.sum()).max() < 5 * np.sqrt(0.25 / 40_000)


def test_negatives_are_seeded():
    targets = np.arange(50) % 9
    a = draw_negatives(targets, 9, "uniform", 3, seed=4)
    assert np.array_equal(a, draw_negatives(targets, 9, "uniform", 3, seed=4))
    assert not np.array_equal(a, draw_negatives(targets, 9, "uniform", 3, seed=5))
    with pytest.raises(ValueError, match="popularity"):
        draw_negatives(targets, 9, "popularity", 3, seed=4, counts=np.ones(9))


# --- the methods' promises on a tiny model ---

TITLES = ["Heat", "Fargo", "Casino", "Babe", "Nixon", "Balto"]


@pytest.fixture(scope="module")
def toy(tokenizer):
    """Six titles, a split of 16 samples whose targets are all `Fargo`, the trie and the prompts."""
    histories = [[i % 6, (i + 1) % 6] for i in range(16)]
    split = pd.DataFrame(
        {
            "user": [str(i) for i in range(16)],
            "history": histories,
            "target": [1] * 16,
            "timestamp": range(16),
        }
    )
    trie = build_trie(TITLES, tokenizer, split["history"])
    return split, trie


def tiny_settings(**kw) -> TuneSettings:
    base = dict(epochs=1, batch_size=4, micro_batch_size=4, learning_rate=3e-3, patience=5, seed=0)
    return TuneSettings.from_config({**base, **kw})


def reward_margin(model, reference, data, pad_id) -> float:
    """Mean over samples of r_chosen - mean_k r_rejected (DPO's implicit reward margin)."""
    loss = make_loss(
        "b_sdpo", {"beta": 1.0, "sampler": "uniform", "negatives": 2, "seed": 0}, reference=reference
    )
    batch = data.batch(np.arange(len(data)), pad_id)
    with torch.no_grad():
        _, parts = loss(model.eval(), batch, pad_id, torch.Generator())
    model.train()
    return float(parts["margin"].mean())


@pytest.mark.parametrize("method", ["b_sdpo", "f_dmpo", "b_rosepo"])
def test_preference_training_raises_the_chosen_titles_margin(method, toy, tokenizer, tmp_path):
    """The promise of S-DPO, DMPO and RosePO: the policy moves probability from the rejected titles
    to the chosen one relative to the frozen reference (the margin starts at 0: policy = reference)."""
    split, trie = toy
    rows = np.arange(len(split))
    sampler, k = ("popularity", 1) if method.endswith("rosepo") else ("uniform", 2)
    targets = np.asarray(trie.item_title)[split["target"].to_numpy()]
    rejected = draw_negatives(targets, trie.n_titles, sampler, k, seed=0, counts=trie.title_reward)
    data = build_tune_data(split, rows, TITLES, tokenizer, trie, 5, rejected_titles=rejected)
    model = tiny_random_model(tokenizer, seed=0)
    reference = tiny_random_model(tokenizer, seed=0).eval().requires_grad_(False)
    block = {"beta": 1.0, "sampler": sampler, "negatives": k, "seed": 0}
    if method == "f_dmpo":
        block["dmpo_reduce"] = "sum"
    loss = make_loss(method, block, trie, reference=reference)
    pad = tokenizer.pad_token_id
    assert reward_margin(model, reference, data, pad) == pytest.approx(0.0, abs=1e-5)
    valid = build_tune_data(split, rows[:4], TITLES, tokenizer, trie, 5)
    paths = TrainPaths(tmp_path / "ck", tmp_path / "log.csv", None)
    train(model, loss, data, valid, tiny_settings(epochs=3), paths, pad, name=method)
    assert reward_margin(model, reference, data, pad) > 1.0
    log = pd.read_csv(tmp_path / "log.csv")
    train_rows = log[log["split"] == "train"]
    assert train_rows["preference_loss"].iloc[-1] < train_rows["preference_loss"].iloc[0]


def test_ppo_moves_probability_to_the_rewarded_title(toy, tokenizer, tmp_path):
    """PPO's promise: with the SASRec score of one title (Casino) at 1 and every other at 0, the
    policy's probability of sampling that title under the trie grows, held near the reference by KL."""
    split, trie = toy
    rows = np.arange(len(split))
    scores = np.zeros((len(split), len(TITLES)), np.float16)
    scores[:, 2] = 1.0
    folder = tmp_path / "sasrec"
    folder.mkdir()
    np.save(folder / "p_ui_train.npy", scores)
    data = build_tune_data(
        split,
        rows,
        TITLES,
        tokenizer,
        trie,
        5,
        p_ui_path=folder / "p_ui_train.npy",
        p_ui_normalisation="minmax",
    )
    assert torch.equal(data.p_ui[:, trie.title_index["Casino"]].float(), torch.ones(len(rows)))
    model = tiny_random_model(tokenizer, seed=0)
    reference = tiny_random_model(tokenizer, seed=0).eval().requires_grad_(False)
    loss = make_loss("f_ppo", {"seed": 0, "ppo": {"kl_coef": 0.01, "clip": 0.2}}, trie, reference=reference)
    assert isinstance(loss, PPOLoss)
    loss.attach(model)
    prompt = prompt_ids_batch(tokenizer, [[TITLES[0], TITLES[1]]], 5, "full")[0]
    pad = tokenizer.pad_token_id
    casino = trie.title_index["Casino"]
    before = float(title_log_probs(model.eval(), trie, prompt, pad)[casino].exp())
    model.train()
    valid = build_tune_data(split, rows[:4], TITLES, tokenizer, trie, 5)
    paths = TrainPaths(tmp_path / "ck", tmp_path / "log.csv", None)
    train(model, loss, data, valid, tiny_settings(epochs=6, learning_rate=1e-2), paths, pad, name="f_ppo")
    after = float(title_log_probs(model.eval(), trie, prompt, pad)[casino].exp())
    assert after > before + 0.2, (before, after)
    log = pd.read_csv(tmp_path / "log.csv")
    assert {"policy_loss", "value_loss", "score_loss", "kl_loss"} <= set(log.columns)

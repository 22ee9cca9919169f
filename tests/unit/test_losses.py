"""Losses of BIGRec, IFairLRS and Flower on hand-made tensors (flowrec.tune.losses, flowrec.tune.objectives)."""

import itertools
import math

import numpy as np
import pytest
import torch

from flowrec.tune.losses import (
    ifairlrs_weights,
    minmax_p_ui,
    normalise_p_ui,
    process_log_rewards,
    sft_loss,
    subtb_loss,
    token_log_probs,
)
from flowrec.tune.objectives import FlowerLoss, SFTLoss, make_loss


def hand_subtb(log_pi: list[float], log_r: list[float], granularity: int) -> float:
    """Plain-Python SubTB: states every `granularity` tokens plus the end, all pairs m < n."""
    n = len(log_pi)
    states = sorted(set(range(0, n + 1, granularity)) | {n})
    residuals = [(sum(log_pi[a:b]) - sum(log_r[a:b])) ** 2 for a, b in itertools.combinations(states, 2)]
    return sum(residuals) / len(residuals)


def test_subtb_zero_when_policy_equals_process_rewards():
    log_r = torch.log(torch.tensor([[0.5, 0.25, 1.0, 0.0], [0.1, 1.0, 0.0, 0.0]]).clamp_min(1e-30))
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    log_r = log_r * mask
    assert torch.allclose(subtb_loss(log_r.clone(), log_r, mask), torch.zeros(2), atol=1e-10)
    # Padding positions may hold anything: they are masked.
    noisy = log_r.clone()
    noisy[0, 3] = 5.0
    assert torch.allclose(subtb_loss(noisy, log_r, mask), torch.zeros(2), atol=1e-10)
    off = log_r.clone()
    off[1, 0] -= 0.3
    loss = subtb_loss(off, log_r, mask)
    assert loss[0] == 0 and loss[1] > 0


@pytest.mark.parametrize("granularity", [1, 2, 3])
def test_subtb_matches_hand_computation(granularity):
    rng = np.random.default_rng(granularity)
    log_pi = rng.normal(size=(2, 5)).tolist()
    log_r = rng.normal(size=(2, 5)).tolist()
    lengths = [5, 4]
    mask = torch.tensor([[1] * n + [0] * (5 - n) for n in lengths])
    got = subtb_loss(
        torch.tensor(log_pi, dtype=torch.float64), torch.tensor(log_r, dtype=torch.float64), mask, granularity
    )
    for i, n in enumerate(lengths):
        want = hand_subtb(log_pi[i][:n], log_r[i][:n], granularity)
        assert got[i].item() == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("granularity", [1, 2])
def test_subtb_decay_weighs_a_segment_by_its_length(granularity):
    """The published RQ1 code's segment-length decay: a pair of states n - m tokens apart weighs
    decay^(n - m - 1) in a weighted mean; decay 1 is the equal-weight mean."""
    rng = np.random.default_rng(7)
    log_pi, log_r = rng.normal(size=(2, 5)), rng.normal(size=(2, 5))
    mask = torch.tensor([[1] * 5, [1] * 3 + [0] * 2])
    args = (torch.tensor(log_pi), torch.tensor(log_r), mask, granularity)
    got = subtb_loss(*args, decay=0.5)
    for i, n in enumerate([5, 3]):
        states = sorted(set(range(0, n + 1, granularity)) | {n})
        pairs = list(itertools.combinations(states, 2))
        weights = [0.5 ** (b - a - 1) for a, b in pairs]
        residuals = [(log_pi[i, a:b].sum() - log_r[i, a:b].sum()) ** 2 for a, b in pairs]
        want = sum(w * r for w, r in zip(weights, residuals, strict=True)) / sum(weights)
        assert got[i].item() == pytest.approx(want, rel=1e-12)
    assert torch.equal(subtb_loss(*args, decay=1.0), subtb_loss(*args))
    with pytest.raises(ValueError, match="decay"):
        subtb_loss(*args, decay=0.0)


def test_subtb_granularity_two_by_hand():
    # Three tokens, granularity 2: states 0, 2, 3 -> pairs (0,2), (0,3), (2,3).
    log_pi = torch.tensor([[-1.0, -2.0, -0.5]])
    log_r = torch.tensor([[-1.5, -1.0, -1.0]])
    d = [-1.0 + 1.5, -2.0 + 1.0, -0.5 + 1.0]  # 0.5, -1.0, 0.5
    want = ((d[0] + d[1]) ** 2 + (d[0] + d[1] + d[2]) ** 2 + d[2] ** 2) / 3
    assert subtb_loss(log_pi, log_r, torch.ones(1, 3), 2).item() == pytest.approx(want)
    assert want == pytest.approx(0.5 / 3)


def test_subtb_gradient_reaches_parameters():
    torch.manual_seed(0)
    head = torch.nn.Linear(4, 7)
    hidden = torch.randn(2, 3, 4)
    tokens = torch.tensor([[1, 2, 3], [4, 5, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    log_pi = token_log_probs(head(hidden), tokens)
    loss = subtb_loss(log_pi, torch.full((2, 3), -0.5), mask).mean()
    loss.backward()
    assert loss.item() > 0
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def test_chunked_subtb_at_n_1_is_token_level_subtb_by_hand():
    """Granularity 1: a state after every token; three tokens give the six pairs of states 0..3."""
    log_pi = torch.tensor([[-1.0, -2.0, -0.5]], dtype=torch.float64)
    log_r = torch.tensor([[-1.5, -1.0, -1.0]], dtype=torch.float64)
    # per-token residuals d = log pi - log R: 0.5, -1.0, 0.5; segment sums over (a, b), a < b:
    # (0,1) 0.5  (0,2) -0.5  (0,3) 0.0  (1,2) -1.0  (1,3) -0.5  (2,3) 0.5
    want = (0.25 + 0.25 + 0.0 + 1.0 + 0.25 + 0.25) / 6
    assert subtb_loss(log_pi, log_r, torch.ones(1, 3), 1).item() == pytest.approx(want, rel=1e-12)
    assert want == pytest.approx(1 / 3)


@pytest.mark.parametrize("granularity", [3, 4, 150])
def test_chunked_subtb_at_the_title_length_is_trajectory_balance_by_hand(granularity):
    """Granularity >= the title's length: states 0 and the end only, one pair, so SubTB is TB,
    (sum log pi - sum log R)^2 (the published n = 150 run, longer than every title)."""
    log_pi = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, 0.0]], dtype=torch.float64)
    log_r = torch.tensor([[-1.5, -1.0, -1.0], [-0.1, -0.2, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    # sample 0: (-3.5) - (-3.5) = 0; sample 1: (-1.0) - (-0.3) = -0.7
    got = subtb_loss(log_pi, log_r, mask, granularity)
    assert got.tolist() == pytest.approx([0.0, 0.49], abs=1e-12)
    # and not token-level SubTB, which also fits every prefix
    assert subtb_loss(log_pi, log_r, mask, 1)[1].item() == pytest.approx(
        ((-0.2) ** 2 + (-0.5) ** 2 + (-0.7) ** 2) / 3
    )


def test_token_log_probs_equals_log_softmax():
    logits = torch.randn(2, 3, 11)
    tokens = torch.randint(0, 11, (2, 3))
    want = torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(token_log_probs(logits, tokens), want, atol=1e-6)


def test_sft_loss_ignores_prompt_and_padding():
    # Sample 0 has two target tokens and one pad; the pad's value must not matter.
    logp = torch.tensor([[-1.0, -3.0, -100.0], [-2.0, -100.0, -100.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert torch.allclose(sft_loss(logp, mask), torch.tensor([2.0, 2.0]))
    assert torch.allclose(sft_loss(logp, mask, torch.tensor([0.5, 3.0])), torch.tensor([1.0, 6.0]))


def test_ifairlrs_weights_hand_example():
    # Targets: group 0 three times, group 1 once -> target shares 0.75, 0.25, 0 (group 2 unused).
    weights = ifairlrs_weights(np.array([0, 0, 1, 0]), np.array([0.6, 0.3, 0.1]), 3)
    assert weights == pytest.approx([0.8, 0.8, 1.2, 0.8])
    with pytest.raises(ValueError, match="groups must lie"):
        ifairlrs_weights(np.array([3]), np.array([0.6, 0.3, 0.1]), 3)


def test_reward_variants_and_p_ui_normalisation():
    p = torch.tensor([[0.1, 0.2, 0.7], [0.25, 0.25, 0.25]])
    norm = normalise_p_ui(p)
    assert torch.allclose(norm[0], torch.tensor([0.1 - 1 / 3, 0.2 - 1 / 3, 0.7 - 1 / 3]) / 0.6 + 1)
    assert torch.allclose(norm[1], torch.ones(3))
    edge = torch.tensor([[math.log(0.5), math.log(0.2)]])
    pu = torch.tensor([2.0])
    assert torch.allclose(process_log_rewards(edge, pu, "plain"), edge)
    assert torch.allclose(process_log_rewards(edge, pu, "div"), edge / 2)
    assert torch.allclose(process_log_rewards(edge, pu, "add"), torch.log(torch.tensor([[1.0, 0.4]])))
    with pytest.raises(ValueError, match="unknown reward variant"):
        process_log_rewards(edge, pu, "mul")


# One SASRec row over four titles (softmax scores) and a sampled title of two tokens plus its
# termination edge, with process rewards 1/2, 1/4 and 1/5 (so log R(i) / F(root) = log(1/40)).
SIGMA_ROW = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
EDGES = torch.log(torch.tensor([[0.5, 0.25, 0.2]]))


def test_each_reward_variant_on_a_hand_computed_p_ui_row():
    title = 3  # the row's maximum, 0.4
    # mean 0.25, span 0.3: mean-normalised p_ui = 1 + 0.15 / 0.3 = 1.5; min-max p_ui = 0.3 / 0.3 = 1
    mean_p = normalise_p_ui(SIGMA_ROW)[:, title]
    minmax_p = minmax_p_ui(SIGMA_ROW)[:, title]
    assert mean_p.item() == pytest.approx(1.5) and minmax_p.item() == pytest.approx(1.0)
    assert process_log_rewards(EDGES, mean_p, "plain").sum().item() == pytest.approx(math.log(1 / 40))
    assert process_log_rewards(EDGES, mean_p, "div").sum().item() == pytest.approx(math.log(1 / 40) / 1.5)
    # ours: log(1.5 * R_p) per edge, three edges
    assert process_log_rewards(EDGES, mean_p, "add").sum().item() == pytest.approx(
        math.log(1 / 40) + 3 * math.log(1.5)
    )
    # published: the row's maximum has p_ui 1, so nothing is added
    assert process_log_rewards(EDGES, minmax_p, "add_published").sum().item() == pytest.approx(
        math.log(1 / 40), abs=1e-6
    )
    # title 1 (0.2): min-max p_ui = 0.1 / 0.3 = 1/3, every edge gains log(1/3 + 1e-20)
    third = minmax_p_ui(SIGMA_ROW)[:, 1]
    got = process_log_rewards(EDGES, third, "add_published")
    assert got.tolist()[0] == pytest.approx([math.log(0.5 / 3), math.log(0.25 / 3), math.log(0.2 / 3)])
    # the row's minimum has min-max p_ui 0: the 1e-20 guard gives log(1e-20) per edge, not -inf
    zero = minmax_p_ui(SIGMA_ROW)[:, 0]
    floor = process_log_rewards(EDGES, zero, "add_published")
    assert torch.isfinite(floor).all()
    assert floor.sum().item() == pytest.approx(math.log(1 / 40) + 3 * math.log(1e-20), rel=1e-6)


def test_our_div_is_the_published_div():
    """The published div (experiments.md section 6): p_ui = 1 + (sigma - mean) / (max - min); every
    title token's T_1 value and the termination value divided by it, so the title's log reward is
    log(c(t) / C) / p_ui; ours divides the same edges by the same p_ui."""
    sigma = SIGMA_ROW[0].tolist()
    mean, span = sum(sigma) / 4, max(sigma) - min(sigma)
    for title in range(4):
        published_p = 1 + (sigma[title] - mean) / span
        published = [e / published_p for e in EDGES[0].tolist()]
        ours = process_log_rewards(EDGES, normalise_p_ui(SIGMA_ROW)[:, title], "div")
        assert ours[0].tolist() == pytest.approx(published, rel=1e-6)


def test_add_published_asks_for_min_max_p_ui_and_the_others_for_mean():
    by_reward = {
        r: make_loss("flower", {"reward": r}, trie=None, granularity=1).p_ui_normalisation
        for r in ("plain", "div", "add", "add_published")
    }
    assert by_reward == {"plain": "mean", "div": "mean", "add": "mean", "add_published": "minmax"}


def test_make_loss_dispatches_by_method_and_names_the_known_ones():
    assert type(make_loss("bigrec")) is SFTLoss and type(make_loss("ifairlrs")) is SFTLoss
    flower = make_loss("flower", {"lambda": 0.5, "reward": "add"}, trie=None, granularity=3)
    assert isinstance(flower, FlowerLoss) and (flower.lambda_, flower.reward, flower.granularity) == (
        0.5,
        "add",
        3,
    )
    assert flower.sample_temperature == 1.0  # the schema default fills what the block leaves out
    with pytest.raises(ValueError, match=r"unknown method 'dpo'; expected one of .*bigrec.*ifairlrs.*flower"):
        make_loss("dpo")
    with pytest.raises(ValueError, match=r"'temp' is not trained by the tuning loop; trained: .*b_sdpo"):
        make_loss("temp")  # decoded from BIGRec's model, no loss of its own
    with pytest.raises(ValueError, match="needs the frozen reference model"):
        make_loss("f_sdpo", {"beta": 0.3, "sampler": "uniform", "negatives": 3, "seed": 0})
    with pytest.raises(ValueError, match=r"`flower`: unknown key\(s\) \['lam'\]"):
        make_loss("flower", {"lam": 0.5}, trie=None, granularity=1)


def test_loss_objects_combine_their_parts(monkeypatch):
    import flowrec.tune.objectives as objectives

    sft, subtb = torch.tensor([1.0, 2.0]), torch.tensor([30.0, 0.5])
    monkeypatch.setattr(objectives, "flower_losses", lambda *args, **kwargs: (sft, subtb))
    monkeypatch.setattr(objectives, "sft_losses", lambda model, batch: sft)
    flower = FlowerLoss(None, 0.005, "plain", 1.0, 1, "children", 1.0)
    total, parts = flower(None, None, 0, None)
    assert torch.equal(total, sft + 0.005 * subtb) and set(parts) == set(flower.parts) == {"sft", "subtb"}
    assert torch.equal(parts["sft"], sft) and torch.equal(parts["subtb"], subtb)
    assert not flower.uses_p_ui and FlowerLoss(None, 1.0, "div", 1.0, 1, "children", 1.0).uses_p_ui
    total, parts = SFTLoss()(None, None, 0, None)
    # SFT has no SubTB term: a zero one keeps log.csv's subtb_loss column for the SFT methods.
    assert torch.equal(total, sft) and torch.equal(parts["subtb"], torch.zeros(2))
    assert flower.fingerprint()["lambda"] == 0.005 and SFTLoss().fingerprint() != flower.fingerprint()


def flow_policy_logits(trie, nodes: torch.Tensor, vocab: int, off_trie: float) -> torch.Tensor:
    """(N, V) logits whose softmax over each state's children is the flow policy F(child) / F(state);
    every token that is no child of the state gets the logit `off_trie`."""
    logits = torch.full((len(nodes), vocab), off_trie, dtype=torch.float64)
    for row, node in enumerate(nodes.tolist()):
        start, end = trie.child_ptr[node], trie.child_ptr[node + 1]
        tokens = torch.as_tensor(trie.child_token[start:end])
        logits[row, tokens] = torch.as_tensor(trie.log_flow[trie.child_node[start:end]])
    return logits


def test_children_normalised_subtb_is_zero_at_the_flow_policy_whatever_the_mass_off_the_trie():
    from flowrec.trie import Trie

    paths = {"a": [1, 2, 9], "b": [1, 3, 9], "c": [4, 9], "d": [4, 5, 6, 9]}
    trie = Trie.build(list(paths), paths, {"a": 6.0, "b": 2.0, "c": 1.0, "d": 3.0})
    vocab = 12
    tokens, mask = (
        torch.nn.utils.rnn.pad_sequence(
            [torch.tensor(p) for p in paths.values()], batch_first=True, padding_value=0
        ),
        torch.nn.utils.rnn.pad_sequence([torch.ones(len(p), dtype=torch.long) for p in paths.values()], True),
    )
    root = torch.zeros(len(paths), 1, dtype=torch.long)
    nodes = torch.cat([root, trie.path_nodes(tokens)[:, :-1]], 1).clamp_min(0)  # (B, T) state left
    log_reward = trie.edge_log_reward_of(nodes, tokens).where(mask.bool(), torch.zeros(()))
    allowed = trie.allowed_mask(nodes.reshape(-1), vocab).reshape(*tokens.shape, vocab)
    allowed |= ~mask.bool().unsqueeze(-1)  # padding (after a leaf, no children): any finite value, masked
    losses = {}
    for off_trie in (-30.0, 0.0, 8.0):  # from no mass off the trie to almost all of it
        logits = flow_policy_logits(trie, nodes.reshape(-1), vocab, off_trie).reshape(*tokens.shape, vocab)
        children = token_log_probs(logits, tokens, allowed=allowed)
        vocab_norm = token_log_probs(logits, tokens)
        losses[off_trie] = (subtb_loss(children, log_reward, mask), subtb_loss(vocab_norm, log_reward, mask))
        assert torch.allclose(losses[off_trie][0], torch.zeros(len(paths), dtype=torch.float64), atol=1e-12)
    # Over the vocabulary the same policy is only balanced when no mass is off the trie.
    assert torch.allclose(losses[-30.0][1], torch.zeros(len(paths), dtype=torch.float64), atol=1e-9)
    assert (losses[0.0][1] > 1e-3).all() and (losses[8.0][1] > losses[0.0][1]).all()
    # Away from the flow policy the children-normalised loss is positive, and still blind to off-trie mass.
    logits = flow_policy_logits(trie, nodes.reshape(-1), vocab, 0.0).reshape(*tokens.shape, vocab)
    logits[:, 0, 1] += 1.0  # more mass on the root's first child than its flow share
    moved = subtb_loss(token_log_probs(logits, tokens, allowed=allowed), log_reward, mask)
    logits[..., 10:] += 5.0  # tokens 10, 11 are no child of any state
    assert (moved > 0).all()
    assert torch.allclose(
        moved, subtb_loss(token_log_probs(logits, tokens, allowed=allowed), log_reward, mask)
    )


def test_flower_normalise_setting_is_checked_and_fingerprinted():
    with pytest.raises(ValueError, match="normalise 'trie'"):
        make_loss("flower", {"normalise": "trie"}, trie=None, granularity=1)
    children, vocab = (
        make_loss("flower", {"normalise": n}, trie=None, granularity=1) for n in ("children", "vocab")
    )
    assert make_loss("flower", {}, trie=None, granularity=1).normalise == "children"  # the schema default
    assert children.fingerprint() != vocab.fingerprint()

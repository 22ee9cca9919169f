"""Distribution divergences (natural log) on hand-worked cases: every expected value is computed by hand
in the comments."""

import math

import pytest

from flowrec.divergences import (
    aligned_counts,
    distribution_divergences,
    js_divergence,
    kl_divergence,
    title_distribution,
    token_distribution,
)


def test_js_hand_computed_with_zero_counts():
    # P = [3, 1, 0] -> [0.75, 0.25, 0]; Q = [2, 0, 2] -> [0.5, 0, 0.5]; M = [0.625, 0.125, 0.25]
    # KL(P||M) = 0.75 ln(0.75/0.625) + 0.25 ln(0.25/0.125) = 0.136741 + 0.173287 = 0.310028
    # KL(Q||M) = 0.5 ln(0.5/0.625) + 0.5 ln(0.5/0.25) = -0.111572 + 0.346574 = 0.235002
    # JS = (0.310028 + 0.235002) / 2 = 0.272515
    assert js_divergence([3, 1, 0], [2, 0, 2]) == pytest.approx(0.272515, abs=1e-6)
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(math.log(2))  # disjoint: ln 2
    assert js_divergence([2, 2], [1, 1]) == pytest.approx(0.0)


def test_kl_hand_computed_with_smoothing():
    # counts + 0.5: P = [3.5, 1.5, 0.5] / 5.5, Q = [2.5, 0.5, 2.5] / 5.5 (same total 5.5)
    # KL(P||Q) = (3.5 ln(3.5/2.5) + 1.5 ln(1.5/0.5) + 0.5 ln(0.5/2.5)) / 5.5
    #          = (3.5 * 0.336472 + 1.5 * 1.098612 + 0.5 * -1.609438) / 5.5
    #          = (1.177653 + 1.647918 - 0.804719) / 5.5 = 2.020852 / 5.5 = 0.367428
    assert kl_divergence([3, 1, 0], [2, 0, 2]) == pytest.approx(0.367428, abs=1e-6)
    # KL(Q||P) = (2.5 ln(2.5/3.5) + 0.5 ln(0.5/1.5) + 2.5 ln(2.5/0.5)) / 5.5
    #          = (-0.841180 - 0.549306 + 4.023595) / 5.5 = 2.633109 / 5.5 = 0.478747
    assert kl_divergence([2, 0, 2], [3, 1, 0]) == pytest.approx(0.478747, abs=1e-6)
    assert kl_divergence([1, 0], [0, 1], smoothing=0.0) == math.inf
    with pytest.raises(ValueError):
        kl_divergence([0, 0], [1, 1])


def test_title_and_token_distributions():
    assert title_distribution(["a", "b", "a"]) == {"a": 2.0, "b": 1.0}
    assert title_distribution({"a": 3}) == {"a": 3.0}
    # a = tokens [1, 2] twice, b = tokens [2, 3] once -> 1: 2, 2: 3, 3: 1
    assert token_distribution({"a": 2, "b": 1}, {"a": [1, 2], "b": [2, 3]}) == {1: 2.0, 2: 3.0, 3: 1.0}
    with pytest.raises(KeyError, match="token ids missing"):
        token_distribution({"c": 1}, {"a": [1]})
    p, q = aligned_counts({"a": 1.0}, {"b": 2.0})
    assert p.tolist() == [1.0, 0.0] and q.tolist() == [0.0, 2.0]


def test_distribution_divergences_hand_computed():
    # T = {a: 3, b: 1}; R = [a, a, c, c] -> {a: 2, c: 2}; support a, b, c: T = [3, 1, 0], R = [2, 0, 2]
    # so the title-level values are the ones computed above
    token_ids = {"a": [1], "b": [2], "c": [3]}  # one token per title: token level = title level
    out = distribution_divergences({"a": 3, "b": 1}, ["a", "a", "c", "c"], token_ids)
    assert out["title_JS"] == pytest.approx(0.272515, abs=1e-6)
    assert out["title_KL_TR"] == pytest.approx(0.367428, abs=1e-6)
    assert out["title_KL_RT"] == pytest.approx(0.478747, abs=1e-6)
    assert out["token_JS"] == pytest.approx(out["title_JS"])
    assert out["generated"] == 4 and out["in_target"] == pytest.approx(0.5)
    # shared tokens make the token level closer than the title level: a = [1, 2], c = [1, 3]
    out2 = distribution_divergences({"a": 1}, ["c"], {"a": [1, 2], "c": [1, 3]})
    assert out2["title_JS"] == pytest.approx(math.log(2))
    # token: T = [1, 1, 0] / 2, R = [1, 0, 1] / 2, M = [0.5, 0.25, 0.25]
    # KL(T||M) = 0.5 ln(0.5/0.5) + 0.5 ln(0.5/0.25) = 0.346574 = KL(R||M) -> JS = 0.346574
    assert out2["token_JS"] == pytest.approx(0.5 * math.log(2))

"""Metrics on hand-worked cases: every expected value is computed by hand in the comments."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from flowrec.metrics import (
    MetricsSettings,
    accuracy_at_k,
    aligned_counts,
    catalogue_coverage,
    check_cutoffs,
    distribution_divergences,
    evaluate_prediction_files,
    evaluate_rankings,
    fairness_at_k,
    group_counts,
    js_divergence,
    kl_divergence,
    tail_share,
    target_ranks,
    title_distribution,
    token_distribution,
    word_diversity,
)
from flowrec.subsets import seeded_subset

LISTS = [
    ["A", "B", "C", "D", "E"],  # target A: hit at rank 1 (0-based rank 0)
    ["A", "B", "C", "D", "E"],  # target D: hit at rank 4 (0-based rank 3)
    ["A", "B", "C", "D", "E"],  # target Z: no hit
    ["B", "A", "C", "D", "E"],  # target A again: another item with the same title A -> hit at rank 2
]
TARGETS = ["A", "D", "Z", "A"]


def test_ranks_hit_at_1_and_4_no_hit_duplicate_title():
    assert target_ranks(LISTS, TARGETS, 5).tolist() == [0, 3, -1, 1]
    assert target_ranks(LISTS, TARGETS, 3).tolist() == [0, -1, -1, 1]  # D (rank 4) is cut at K=3


def test_hr_ndcg_hand_computed():
    # @5: hits in samples 0, 1, 3 -> HR = 3/4.
    # NDCG gains 1/log2(rank+2): 1/log2(2) = 1, 1/log2(5) = 0.430677, 0, 1/log2(3) = 0.630930
    # NDCG@5 = (1 + 0.430677 + 0 + 0.630930) / 4 = 0.515402
    m5 = accuracy_at_k(LISTS, TARGETS, 5)
    assert m5["HR@5"] == pytest.approx(0.75)
    assert m5["NDCG@5"] == pytest.approx(0.515402, abs=1e-6)
    # @1: only sample 0 -> HR = NDCG = 1/4
    m1 = accuracy_at_k(LISTS, TARGETS, 1)
    assert m1["HR@1"] == pytest.approx(0.25) and m1["NDCG@1"] == pytest.approx(0.25)
    # @3: samples 0 (rank 0) and 3 (rank 1): HR = 2/4, NDCG = (1 + 0.630930) / 4 = 0.407732
    m3 = accuracy_at_k(LISTS, TARGETS, 3)
    assert m3["HR@3"] == pytest.approx(0.5)
    assert m3["NDCG@3"] == pytest.approx(0.407732, abs=1e-6)


def test_short_lists_are_padded_not_hits():
    # A list shorter than K: the padding never matches a target.
    assert accuracy_at_k([["A"], []], ["B", "A"], 3) == {"HR@3": 0.0, "NDCG@3": 0.0}


# Four groups: 0 most popular ... 3 least popular; group 2 (E) is never recommended;
# X is absent from the groups (not in training) -> group 3, counted.
TITLE_GROUP = {"A": 0, "B": 0, "C": 1, "E": 2, "D": 3}
DATA_SHARES = [0.4, 0.3, 0.2, 0.1]
FAIR_LISTS = [["A", "C", "E2"], ["B", "X"], ["A", "D"]]


def test_group_counts_absent_title_counted_in_last_group():
    # top-2: A, C | B, X | A, D -> g0: A, B, A = 3; g1: C = 1; g2: none = 0; g3: X (absent), D = 2
    assert group_counts(FAIR_LISTS, 2, TITLE_GROUP, 4).tolist() == [3, 1, 0, 2]
    # the published bug would give g3 = 1 whichever came last; two absent titles make 2, not 1
    assert group_counts([["X", "Y"]], 2, TITLE_GROUP, 4).tolist() == [0, 0, 0, 2]


def test_dgu_mgu_hand_computed():
    # rec shares at K=2: [3, 1, 0, 2] / 6 = [0.5, 0.166667, 0, 0.333333]
    # d = rec - data = [0.1, -0.133333, -0.2, 0.233333]
    # DGU = 0.233333 - (-0.2) = 0.433333; MGU = (0.1 + 0.133333 + 0.2 + 0.233333) / 4 = 0.166667
    m = fairness_at_k(FAIR_LISTS, 2, TITLE_GROUP, DATA_SHARES)
    assert m["DGU@2"] == pytest.approx(0.433333, abs=1e-6)
    assert m["MGU@2"] == pytest.approx(0.166667, abs=1e-6)


def test_tail_share_and_coverage():
    # tail = groups 1, 2, 3 (the three least popular of 4): (1 + 0 + 2) / 6 = 0.5
    assert tail_share(FAIR_LISTS, 2, TITLE_GROUP, 4) == pytest.approx(0.5)
    # distinct top-2 titles: A, C, B, X, D = 5 of a catalogue of 10 titles
    assert catalogue_coverage(FAIR_LISTS, 2, 10) == pytest.approx(0.5)


def test_word_entropy_and_ttr_hand_computed():
    # words: a b | b c | a b -> a: 2, b: 3, c: 1 of 6
    # H = -(2/6 log2 2/6 + 3/6 log2 3/6 + 1/6 log2 1/6) = 0.528321 + 0.5 + 0.430827 = 1.459148
    # TTR = 3 distinct / 6 words = 0.5
    m = word_diversity([["a b", "b c"], ["a  b"]])
    assert m["H"] == pytest.approx(1.459148, abs=1e-6)
    assert m["TTR"] == pytest.approx(0.5)
    assert word_diversity([[]]) == {"H": 0.0, "TTR": 0.0}


def test_cutoff_check_names_both_settings():
    check_cutoffs([1, 5, 10], [5, 10], 10)
    with pytest.raises(ValueError, match=r"metrics\.ks .*decode\.num_return=10"):
        check_cutoffs([5, 20], [10], 10)
    with pytest.raises(ValueError, match=r"metrics\.fairness_ks"):
        check_cutoffs([5], [20], 10)


def test_settings_reject_unknown_key():
    assert MetricsSettings.from_dict({"ks": [1], "fairness_ks": [1]}).ks == [1]
    with pytest.raises(ValueError, match="unknown key.*'k'"):
        MetricsSettings.from_dict({"ks": [1], "fairness_ks": [1], "k": 3})


def test_evaluate_rankings_keys_and_truncation():
    settings = MetricsSettings(ks=[1, 3], fairness_ks=[2])
    lists = [["A", "B", "C", "D"], ["C", "D", "A", "B"]]
    out = evaluate_rankings(lists, ["D", "C"], TITLE_GROUP, DATA_SHARES, 5, settings, list_k=3)
    # list_k = 3 cuts D from the first list: HR@3 = 1/2 (only sample 2 at rank 0)
    assert out["HR@3"] == pytest.approx(0.5)
    assert out["samples"] == 2
    assert out["Coverage@3"] == pytest.approx(4 / 5)  # A, B, C, D of 5
    assert set(out) >= {"NDCG@1", "DGU@2", "MGU@2", "H", "TTR", "TailShare@3", "group_shares@3"}
    with pytest.raises(ValueError, match="num_return"):
        evaluate_rankings(lists, ["D", "C"], TITLE_GROUP, DATA_SHARES, 5, settings, list_k=2)


def _write_fixture(tmp_path, n_test=6):
    items = pd.DataFrame({"item_id": [0, 1, 2, 3], "title": ["A", "B", "A", "C"], "source_id": list("wxyz")})
    items.to_parquet(tmp_path / "items.parquet")
    # targets: item 2 has title A (a duplicate of item 0)
    test = pd.DataFrame({"target": [2, 1, 3, 0, 1, 3][:n_test]})
    test.to_parquet(tmp_path / "test.parquet")
    pd.DataFrame(
        {"title": ["A", "B", "C"], "title_id": [0, 1, 2], "frequency": [5, 3, 0], "group": [0, 1, 1]}
    ).to_parquet(tmp_path / "groups.parquet")
    (tmp_path / "groups.json").write_text(json.dumps({"shares": [0.625, 0.375], "n_groups": 2}))
    return [tmp_path / f for f in ("test.parquet", "items.parquet", "groups.parquet", "groups.json")]


def test_evaluate_files_subset_and_duplicate_title(tmp_path):
    test, items, groups, groups_json = _write_fixture(tmp_path)
    pred = pd.DataFrame(
        {
            "sample": [5, 0, 1, 2, 3, 4],
            "titles": [["C", "A"], ["A", "B"], ["A", "B"], ["A", "B"], ["B", "C"], ["B", "A"]],
            "item_ids": [[3, 0], [0, 1], [0, 1], [0, 1], [1, 3], [1, 0]],
            "scores": [[0.0, -1.0]] * 6,
        }
    )
    pred.to_parquet(tmp_path / "pred.parquet")
    settings = MetricsSettings(ks=[1, 2], fairness_ks=[2])
    full = evaluate_prediction_files(tmp_path / "pred.parquet", test, items, groups, groups_json, settings, 2)
    # targets by sample: A (item 2, shares title A), B, C, A, B, C; all ranks: 0, 1, -1, -1, 0, 0
    assert full["HR@2"] == pytest.approx(4 / 6) and full["HR@1"] == pytest.approx(3 / 6)
    subset = np.array([1, 3])
    part = evaluate_prediction_files(
        tmp_path / "pred.parquet", test, items, groups, groups_json, settings, 2, subset
    )
    # sample 1: target B at rank 1 -> HR@1 0, HR@2 1; sample 3: target A, list B C -> miss
    assert part["samples"] == 2 and part["HR@1"] == 0.0 and part["HR@2"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="missing"):
        evaluate_prediction_files(
            tmp_path / "pred.parquet", test, items, groups, groups_json, settings, 2, np.array([0, 1, 6])
        )


def test_evaluate_files_rejects_repeated_titles(tmp_path):
    test, items, groups, groups_json = _write_fixture(tmp_path)
    pd.DataFrame(
        {"sample": [0], "titles": [["A", "A"]], "item_ids": [[0, 2]], "scores": [[0.0, 0.0]]}
    ).to_parquet(tmp_path / "pred.parquet")
    with pytest.raises(ValueError, match="sample 0: titles are not distinct"):
        evaluate_prediction_files(
            tmp_path / "pred.parquet", test, items, groups, groups_json, MetricsSettings([1], [1]), 2
        )


def test_seeded_subset_is_stable():
    assert np.array_equal(seeded_subset(100, 10, 42), seeded_subset(100, 10, 42))


# ---------------------------------------------------------------------------------------------
# Divergences (natural log)
# ---------------------------------------------------------------------------------------------


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

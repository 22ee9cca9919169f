"""Metrics on hand-worked cases: every expected value is computed by hand in the comments.

The metrics are defined once (flowrec.sample_metrics): each case goes through the per-sample table and
the point values, the path of the evaluate stage.
"""

import json

import numpy as np
import pandas as pd
import pytest

from flowrec.metric_cutoffs import check_cutoffs
from flowrec.metrics import MetricsSettings, read_scoring_inputs, target_ranks
from flowrec.sample_metrics import evaluate_inputs, per_sample_table, point_values
from flowrec.settings import settings_from_block
from flowrec.subsets import seeded_subset


def point(lists, targets, title_group, shares, n_titles, ks, fairness_ks, list_k):
    """Point values of lists (samples 0..n-1) through the per-sample table."""
    table = per_sample_table(
        range(len(lists)), lists, targets, title_group, len(shares), ks, fairness_ks, list_k
    )
    return point_values(table, shares, n_titles, ks, fairness_ks, list_k)


def settings(ks, fairness_ks):
    return MetricsSettings(
        ks, fairness_ks, bootstrap_draws=10, bootstrap_seed=0, confidence=0.95, jackknife_groups=5
    )


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
    m = point(LISTS, TARGETS, {}, [1.0], 5, [1, 3, 5], [5], 5)
    m5 = m
    assert m5["HR@5"] == pytest.approx(0.75)
    assert m5["NDCG@5"] == pytest.approx(0.515402, abs=1e-6)
    # @1: only sample 0 -> HR = NDCG = 1/4
    assert m["HR@1"] == pytest.approx(0.25) and m["NDCG@1"] == pytest.approx(0.25)
    # @3: samples 0 (rank 0) and 3 (rank 1): HR = 2/4, NDCG = (1 + 0.630930) / 4 = 0.407732
    assert m["HR@3"] == pytest.approx(0.5)
    assert m["NDCG@3"] == pytest.approx(0.407732, abs=1e-6)


def test_short_lists_are_padded_not_hits():
    # A list shorter than K: the padding never matches a target.
    m = point([["A"], []], ["B", "A"], {}, [1.0], 5, [3], [3], 3)
    assert (m["HR@3"], m["NDCG@3"]) == (0.0, 0.0)


# Four groups: 0 most popular ... 3 least popular; group 2 (E) is never recommended;
# X is absent from the groups (not in training) -> group 3, counted.
TITLE_GROUP = {"A": 0, "B": 0, "C": 1, "E": 2, "D": 3}
DATA_SHARES = [0.4, 0.3, 0.2, 0.1]
FAIR_LISTS = [["A", "C", "E2"], ["B", "X"], ["A", "D"]]


def group_counts(lists, k, title_group, n_groups):
    table = per_sample_table(range(len(lists)), lists, [""] * len(lists), title_group, n_groups, [k], [k], k)
    return np.stack(table[f"group_counts@{k}"].to_numpy()).sum(axis=0)


def test_group_counts_absent_title_counted_in_last_group():
    # top-2: A, C | B, X | A, D -> g0: A, B, A = 3; g1: C = 1; g2: none = 0; g3: X (absent), D = 2
    assert group_counts(FAIR_LISTS, 2, TITLE_GROUP, 4).tolist() == [3, 1, 0, 2]
    # the published bug would give g3 = 1 whichever came last; two absent titles make 2, not 1
    assert group_counts([["X", "Y"]], 2, TITLE_GROUP, 4).tolist() == [0, 0, 0, 2]


def test_dgu_mgu_hand_computed():
    # rec shares at K=2: [3, 1, 0, 2] / 6 = [0.5, 0.166667, 0, 0.333333]
    # d = rec - data = [0.1, -0.133333, -0.2, 0.233333]
    # DGU = 0.233333 - (-0.2) = 0.433333; MGU = (0.1 + 0.133333 + 0.2 + 0.233333) / 4 = 0.166667
    m = point(FAIR_LISTS, [""] * 3, TITLE_GROUP, DATA_SHARES, 10, [2], [2], 2)
    assert m["DGU@2"] == pytest.approx(0.433333, abs=1e-6)
    assert m["MGU@2"] == pytest.approx(0.166667, abs=1e-6)


def test_tail_share_and_coverage():
    m = point(FAIR_LISTS, [""] * 3, TITLE_GROUP, DATA_SHARES, 10, [2], [2], 2)
    # tail = groups 1, 2, 3 (the three least popular of 4): (1 + 0 + 2) / 6 = 0.5
    assert m["TailShare@2"] == pytest.approx(0.5)
    # distinct top-2 titles: A, C, B, X, D = 5 of a catalogue of 10 titles
    assert m["Coverage@2"] == pytest.approx(0.5)


def test_word_entropy_and_ttr_hand_computed():
    # words: a b | b c | a b -> a: 2, b: 3, c: 1 of 6
    # H = -(2/6 log2 2/6 + 3/6 log2 3/6 + 1/6 log2 1/6) = 0.528321 + 0.5 + 0.430827 = 1.459148
    # TTR = 3 distinct / 6 words = 0.5
    m = point([["a b", "b c"], ["a  b"]], ["", ""], {}, [1.0], 5, [1], [1], 2)
    assert m["H"] == pytest.approx(1.459148, abs=1e-6)
    assert m["TTR"] == pytest.approx(0.5)
    empty = point([[]], [""], {}, [1.0], 5, [1], [1], 2)
    assert (empty["H"], empty["TTR"]) == (0.0, 0.0) and str(empty["H"]) == "0.0"  # not -0.0


def test_cutoff_check_names_both_settings():
    check_cutoffs([1, 5, 10], [5, 10], 10)
    with pytest.raises(ValueError, match=r"metrics\.ks .*decode\.num_return=10.*lower the K"):
        check_cutoffs([5, 20], [10], 10)
    with pytest.raises(ValueError, match=r"metrics\.fairness_ks"):
        check_cutoffs([5], [20], 10)


def test_settings_reject_unknown_key():
    assert settings_from_block(MetricsSettings, {"ks": [1], "fairness_ks": [1]}, "metrics").ks == [1]
    with pytest.raises(ValueError, match="unknown key.*'k'"):
        settings_from_block(MetricsSettings, {"ks": [1], "fairness_ks": [1], "k": 3}, "metrics")


def test_point_values_keys_and_truncation():
    lists = [["A", "B", "C", "D"], ["C", "D", "A", "B"]]
    out = point(lists, ["D", "C"], TITLE_GROUP, DATA_SHARES, 5, [1, 3], [2], 3)
    # list_k = 3 cuts D from the first list: HR@3 = 1/2 (only sample 2 at rank 0)
    assert out["HR@3"] == pytest.approx(0.5)
    assert out["samples"] == 2
    assert out["Coverage@3"] == pytest.approx(4 / 5)  # A, B, C, D of 5
    assert set(out) >= {"NDCG@1", "DGU@2", "MGU@2", "H", "TTR", "TailShare@3", "group_shares@3"}


def evaluate_files(predictions, test, items, groups, groups_json, metric_settings, list_k, subset=None):
    inputs = read_scoring_inputs(predictions, test, items, groups, groups_json, subset)
    return evaluate_inputs(inputs, metric_settings, list_k)[0]


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
    full = evaluate_files(
        tmp_path / "pred.parquet", test, items, groups, groups_json, settings([1, 2], [2]), 2
    )
    # targets by sample: A (item 2, shares title A), B, C, A, B, C; all ranks: 0, 1, -1, -1, 0, 0
    assert full["HR@2"] == pytest.approx(4 / 6) and full["HR@1"] == pytest.approx(3 / 6)
    subset = np.array([1, 3])
    part = evaluate_files(
        tmp_path / "pred.parquet", test, items, groups, groups_json, settings([1, 2], [2]), 2, subset
    )
    # sample 1: target B at rank 1 -> HR@1 0, HR@2 1; sample 3: target A, list B C -> miss
    assert part["samples"] == 2 and part["HR@1"] == 0.0 and part["HR@2"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="missing"):
        evaluate_files(
            tmp_path / "pred.parquet",
            test,
            items,
            groups,
            groups_json,
            settings([1, 2], [2]),
            2,
            np.array([0, 1, 6]),
        )


def test_evaluate_files_rejects_repeated_titles(tmp_path):
    test, items, groups, groups_json = _write_fixture(tmp_path)
    pd.DataFrame(
        {"sample": [0], "titles": [["A", "A"]], "item_ids": [[0, 2]], "scores": [[0.0, 0.0]]}
    ).to_parquet(tmp_path / "pred.parquet")
    with pytest.raises(ValueError, match="sample 0: titles are not distinct"):
        evaluate_files(tmp_path / "pred.parquet", test, items, groups, groups_json, settings([1], [1]), 2)


def test_seeded_subset_is_stable():
    assert np.array_equal(seeded_subset(100, 10, 42), seeded_subset(100, 10, 42))

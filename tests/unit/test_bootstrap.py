"""Bootstrap intervals and paired differences (flowrec.bootstrap, flowrec.sample_metrics) on hand-made cases."""

import numpy as np
import pytest

from flowrec.bootstrap import grouped_totals, index_matrix, multiplicities, resample_weights
from flowrec.metrics import MetricsSettings, evaluate_rankings
from flowrec.sample_metrics import bootstrap_intervals, metric_draws, paired_differences, per_sample_table

GROUPS = {"A": 0, "B": 0, "C": 1, "D": 2, "E": 3}
SHARES = [0.4, 0.3, 0.2, 0.1]
ARGS = dict(ks=[1, 3], fairness_ks=[2], list_k=3)


def table_of(lists, targets, title_group=GROUPS):
    return per_sample_table(range(len(lists)), lists, targets, title_group, 4, **ARGS)


def test_index_matrix_is_seeded_and_multiplicities_count_draws() -> None:
    index = index_matrix(5, 4, seed=7)
    assert index.shape == (4, 5) and np.array_equal(index, index_matrix(5, 4, seed=7))
    weights = multiplicities(index, 5)
    assert weights.sum(axis=1).tolist() == [5.0] * 4
    assert all(weights[b, i] == (index[b] == i).sum() for b in range(4) for i in range(5))


def test_grouped_totals_equal_a_loop() -> None:
    rng = np.random.default_rng(0)
    weights = rng.integers(0, 3, size=(6, 4)).astype(float)
    owner, key, counts = rng.integers(0, 4, 50), rng.integers(0, 7, 50), rng.integers(1, 4, 50)
    expected = np.zeros((6, 9))
    for o, k, c in zip(owner, key, counts, strict=True):
        expected[:, k] += weights[:, o] * c
    assert np.allclose(grouped_totals(weights, owner, key, 9, counts), expected)


def test_all_hits_give_the_interval_one_one() -> None:
    table = table_of([["A", "B", "C"]] * 20, ["A"] * 20)
    ci = bootstrap_intervals(table, SHARES, 5, **ARGS, draws=200, seed=0, level=0.95)
    assert ci["HR@1"] == [1.0, 1.0] and ci["NDCG@3"] == [1.0, 1.0]


def test_binomial_interval_matches_the_normal_approximation() -> None:
    # 60 hits in 200 samples: p = 0.3, standard error sqrt(0.3 * 0.7 / 200) = 0.0324,
    # 95% interval 0.3 +- 1.96 * 0.0324 = [0.2365, 0.3635]
    lists = [["A", "B", "C"]] * 200
    targets = ["A"] * 60 + ["Z"] * 140
    ci = bootstrap_intervals(table_of(lists, targets), SHARES, 5, **ARGS, draws=2000, seed=1, level=0.95)
    assert ci["HR@1"] == pytest.approx([0.2365, 0.3635], abs=0.012)


def test_metric_draws_with_unit_weights_equal_evaluate_rankings() -> None:
    lists = [["A", "B", "C"], ["C", "D", "X"], ["E", "A", "D"], ["B", "C", "A"]]
    targets = ["A", "D", "Z", "A"]
    settings = MetricsSettings(
        ks=[1, 3], fairness_ks=[2], bootstrap_draws=10, bootstrap_seed=0, confidence=0.95
    )
    expected = evaluate_rankings(lists, targets, GROUPS, SHARES, 5, settings, list_k=3)
    got = metric_draws(table_of(lists, targets), np.ones((1, 4)), SHARES, 5, **ARGS)
    assert set(got) == {k for k, v in expected.items() if isinstance(v, float)}
    for metric, values in got.items():
        assert values[0] == pytest.approx(expected[metric], abs=1e-12), metric


def test_resampled_statistics_are_recomputed_from_counts() -> None:
    # a draw holding sample 0 twice: H and TTR of the words "a b a b", not the mean of per-sample values
    table = table_of([["a b"], ["c"]], ["x", "y"], {})
    got = metric_draws(table, np.array([[2.0, 0.0], [1.0, 1.0]]), SHARES, 5, **ARGS)
    assert got["TTR"].tolist() == [0.5, 1.0]
    assert got["H"] == pytest.approx([1.0, np.log2(3)])
    assert got["Coverage@3"].tolist() == [0.2, 0.4]


def test_paired_difference_of_a_method_with_itself_is_exactly_zero() -> None:
    rng = np.random.default_rng(3)
    titles = list("ABCDE")
    lists = [list(rng.permutation(titles)[:3]) for _ in range(30)]
    targets = list(rng.choice(titles, 30))
    table = table_of(lists, targets)
    diff = paired_differences(table, table, SHARES, 5, **ARGS, draws=300, seed=0, level=0.95)
    assert (diff[["difference", "lo", "hi"]].to_numpy() == 0.0).all()
    assert not diff["excludes_zero"].any() and (diff["samples"] == 30).all()


def test_paired_difference_finds_a_clear_gain_on_the_common_samples() -> None:
    targets = ["A"] * 40
    better = table_of([["A", "B", "C"]] * 40, targets)
    worse = table_of([["B", "A", "C"]] * 20 + [["B", "C", "D"]] * 20, targets)
    diff = paired_differences(better, worse.iloc[5:], SHARES, 5, **ARGS, draws=300, seed=0, level=0.95)
    hr1 = diff.set_index("metric").loc["HR@1"]
    assert hr1["difference"] == 1.0 and hr1["excludes_zero"] and hr1["samples"] == 35
    assert resample_weights(35, 3, 0).shape == (3, 35)

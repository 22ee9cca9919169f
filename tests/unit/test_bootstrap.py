"""Intervals and paired differences (flowrec.bootstrap, flowrec.sample_metrics) on hand-made cases.

Their coverage on simulated lists: tests/unit/test_interval_coverage.py.
"""

import math

import numpy as np
import pytest

from flowrec.bootstrap import (
    grouped_totals,
    index_matrix,
    jackknife_interval,
    jackknife_labels,
    leave_group_out_weights,
    multiplicities,
    resample_weights,
    t_quantile,
)
from flowrec.metrics import MetricsSettings
from flowrec.sample_metrics import (
    BOOTSTRAP,
    JACKKNIFE,
    interval_method,
    metric_intervals,
    metric_values,
    paired_differences,
    per_sample_table,
    point_values,
)

GROUPS = {"A": 0, "B": 0, "C": 1, "D": 2, "E": 3}
SHARES = [0.4, 0.3, 0.2, 0.1]
ARGS = dict(ks=[1, 3], fairness_ks=[2], list_k=3)


def settings(draws=200, seed=0, level=0.95, groups=100):
    return MetricsSettings([1, 3], [2], draws, seed, level, groups)


def table_of(lists, targets, title_group=GROUPS):
    return per_sample_table(range(len(lists)), lists, targets, title_group, 4, **ARGS)


def intervals(table, metric_settings, n_titles: int = 5):
    point = point_values(table, SHARES, n_titles, **ARGS)
    return point, metric_intervals(table, point, SHARES, n_titles, 3, metric_settings)


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
    _, ci = intervals(table_of([["A", "B", "C"]] * 20, ["A"] * 20), settings())
    assert ci["HR@1"] == [1.0, 1.0] and ci["NDCG@3"] == [1.0, 1.0]
    # identical lists: no spread, every set statistic's interval is its value
    assert ci["Coverage@3"] == [0.6, 0.6] and ci["H"][0] == ci["H"][1]


def test_binomial_interval_matches_the_normal_approximation() -> None:
    # 60 hits in 200 samples: p = 0.3, standard error sqrt(0.3 * 0.7 / 200) = 0.0324,
    # 95% interval 0.3 +- 1.96 * 0.0324 = [0.2365, 0.3635]
    lists = [["A", "B", "C"]] * 200
    targets = ["A"] * 60 + ["Z"] * 140
    _, ci = intervals(table_of(lists, targets), settings(draws=2000, seed=1))
    assert ci["HR@1"] == pytest.approx([0.2365, 0.3635], abs=0.012)


def test_point_values_are_the_statistics_under_unit_weights() -> None:
    lists = [["A", "B", "C"], ["C", "D", "X"], ["E", "A", "D"], ["B", "C", "A"]]
    table = table_of(lists, ["A", "D", "Z", "A"])
    point = point_values(table, SHARES, 5, **ARGS)
    got = metric_values(table, np.ones((1, 4)), SHARES, 5, **ARGS)
    assert list(got) == [k for k, v in point.items() if isinstance(v, float)]
    for metric, values in got.items():
        assert values[0] == point[metric], metric
    assert point["HR@3"] == 0.75 and point["HR@1"] == 0.25


def test_interval_method_of_every_metric() -> None:
    assert [interval_method(m) for m in ("HR@5", "NDCG@10")] == [BOOTSTRAP] * 2
    assert {interval_method(m) for m in ("DGU@10", "MGU@5", "H", "TTR", "Coverage@10", "TailShare@10")} == {
        JACKKNIFE
    }


def test_t_quantile_matches_the_tables() -> None:
    # Student's t 0.975 quantiles of the printed tables (df 1, 2, 7, 30); df -> inf tends to 1.95996
    for df, expected in ((1, 12.7062), (2, 4.3027), (7, 2.3646), (30, 2.0423)):
        assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4), df
    assert t_quantile(0.975, 100_000) == pytest.approx(1.95996, abs=1e-4)
    assert t_quantile(0.95, 10) == pytest.approx(1.8125, abs=1e-4)


def test_jackknife_labels_and_weights() -> None:
    labels = jackknife_labels(10, 3, seed=5)
    assert np.array_equal(labels, jackknife_labels(10, 3, seed=5))
    assert sorted(np.bincount(labels).tolist()) == [3, 3, 4]  # sizes differ by at most one
    assert sorted(jackknife_labels(6, 100, seed=0).tolist()) == list(range(6))  # delete-one
    weights = leave_group_out_weights(labels)
    assert weights.shape == (3, 10) and ((weights == 0) == (labels[None, :] == np.arange(3)[:, None])).all()
    with pytest.raises(ValueError, match="n >= 2"):
        jackknife_labels(1, 5, seed=0)


def test_delete_one_jackknife_of_a_mean_is_the_t_interval() -> None:
    # the jackknife of a mean is the textbook interval mean +- t_(n-1) * s / sqrt(n)
    x = np.array([1.0, 4.0, 2.0, 8.0, 5.0, 7.0])
    replicates = (x.sum() - x) / (len(x) - 1)
    lo, hi = jackknife_interval(x.mean(), replicates, 0.95)
    half = t_quantile(0.975, 5) * x.std(ddof=1) / math.sqrt(len(x))
    assert (lo, hi) == pytest.approx((x.mean() - half, x.mean() + half), abs=1e-12)


def test_jackknife_interval_is_cut_to_the_statistics_range() -> None:
    replicates = np.array([0.0, 0.02, 0.01, 0.05])
    lo, hi = jackknife_interval(0.01, replicates, 0.95)
    assert lo < 0  # the symmetric interval of a statistic near its bound crosses it
    assert jackknife_interval(0.01, replicates, 0.95, (0.0, math.inf)) == (0.0, hi)
    assert jackknife_interval(0.99, 1 - replicates, 0.95, (0.0, 1.0))[1] == 1.0


def test_set_statistics_intervals_hold_their_value_where_the_bootstrap_did_not() -> None:
    # 8 samples of distinct titles (as the tiny workflow): a bootstrap resample repeats samples, so its
    # coverage and TTR only lose, and the old percentile interval lay below the value
    rng = np.random.default_rng(8)
    titles = [f"t{i} w{i % 5}" for i in range(24)]
    lists = [list(rng.choice(titles, 3, replace=False)) for _ in range(8)]
    table = per_sample_table(range(8), lists, ["t0 w0"] * 8, {}, 4, **ARGS)
    point, ci = intervals(table, settings(), n_titles=24)
    old = metric_values(table, resample_weights(8, 200, 0), SHARES, 24, **ARGS)
    assert np.quantile(old["TTR"], 0.975) < point["TTR"]  # the old interval excluded the value
    for metric in ("H", "TTR", "Coverage@3", "DGU@2", "MGU@2", "TailShare@3"):
        lo, hi = ci[metric]
        assert lo <= point[metric] <= hi, metric
    assert ci["TTR"][1] > point["TTR"] > ci["TTR"][0]


def test_resampled_statistics_are_recomputed_from_counts() -> None:
    # a draw holding sample 0 twice: H and TTR of the words "a b a b", not the mean of per-sample values
    table = table_of([["a b"], ["c"]], ["x", "y"], {})
    got = metric_values(table, np.array([[2.0, 0.0], [1.0, 1.0]]), SHARES, 5, **ARGS)
    assert got["TTR"].tolist() == [0.5, 1.0]
    assert got["H"] == pytest.approx([1.0, np.log2(3)])
    assert got["Coverage@3"].tolist() == [0.2, 0.4]


def test_paired_difference_of_a_method_with_itself_is_exactly_zero() -> None:
    rng = np.random.default_rng(3)
    titles = list("ABCDE")
    lists = [list(rng.permutation(titles)[:3]) for _ in range(30)]
    targets = list(rng.choice(titles, 30))
    table = table_of(lists, targets)
    diff = paired_differences(table, table, SHARES, 5, 3, settings(draws=300, groups=10))
    assert (diff[["difference", "lo", "hi"]].to_numpy() == 0.0).all()
    assert not diff["excludes_zero"].any() and (diff["samples"] == 30).all()


def test_paired_difference_finds_a_clear_gain_on_the_common_samples() -> None:
    targets = ["A"] * 40
    better = table_of([["A", "B", "C"]] * 40, targets)
    worse = table_of([["B", "A", "C"]] * 20 + [["B", "C", "D"]] * 20, targets)
    diff = paired_differences(better, worse.iloc[5:], SHARES, 5, 3, settings(draws=300))
    hr1 = diff.set_index("metric").loc["HR@1"]
    assert hr1["difference"] == 1.0 and hr1["excludes_zero"] and hr1["samples"] == 35
    assert resample_weights(35, 3, 0).shape == (3, 35)


def test_paired_jackknife_difference_is_the_difference_of_the_point_values() -> None:
    rng = np.random.default_rng(4)
    titles = [f"t{i} w{i % 7}" for i in range(40)]
    a = per_sample_table(
        range(60), [list(rng.choice(titles, 3, replace=False)) for _ in range(60)], ["x"] * 60, {}, 4, **ARGS
    )
    b = per_sample_table(
        range(60),
        [list(rng.choice(titles[:12], 3, replace=False)) for _ in range(60)],
        ["x"] * 60,
        {},
        4,
        **ARGS,
    )
    diff = paired_differences(a, b, SHARES, 40, 3, settings(groups=20)).set_index("metric")
    pa, pb = point_values(a, SHARES, 40, **ARGS), point_values(b, SHARES, 40, **ARGS)
    for metric, row in diff.iterrows():
        assert row["difference"] == pa[metric] - pb[metric], metric
        assert row["lo"] <= row["difference"] <= row["hi"], metric
    # a draws from 40 titles, b from 12: a covers clearly more, and the paired interval says so
    assert diff.loc["Coverage@3", "excludes_zero"] and diff.loc["Coverage@3", "lo"] > 0

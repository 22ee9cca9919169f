"""Coverage of the set statistics' jackknife intervals on simulated recommendation lists.

Synthetic lists from a known distribution: a catalogue of titles with Zipf popularity and words of a
Zipf vocabulary; every sample recommends 5 distinct titles, drawn one after the other in proportion to popularity.
The target of an interval is the statistic at this test-set size: its mean over many fresh test sets
of the same size, computed here by an independent numpy implementation of the definitions. The
library's values and intervals, through the evaluate stage's path (flowrec.sample_metrics.
evaluate_inputs), must equal that implementation's values, hold their own point value, and cover the
target in 90-99% of 200 simulated test sets; the old percentile bootstrap is shown to miss it.
"""

import dataclasses

import numpy as np
import pytest

from flowrec.bootstrap import (
    jackknife_interval,
    jackknife_labels,
    leave_group_out_weights,
    percentile_interval,
    resample_weights,
)
from flowrec.metrics import MetricsSettings, ScoringInputs
from flowrec.sample_metrics import (
    evaluate_inputs,
    metric_bounds,
    metric_intervals,
    per_sample_table,
    point_values,
    set_values,
)

M, V, N_GROUPS, L, N = 1500, 150, 8, 5, 200  # titles, words, popularity groups, list length, test samples
FAIRNESS_KS = [3, 5]
REPS, FRESH = 200, 500
GROUPS = 100  # the schema default of metrics.jackknife_groups: groups of 2 samples at N = 200


def catalogue(rng: np.random.Generator):
    """Distinct titles of 1-3 Zipf words, their popularity, groups by popularity and the data shares."""
    pop = 1.0 / (np.arange(M) + 3.0) ** 1.1
    pop /= pop.sum()
    word_p = 1.0 / (np.arange(V) + 2.0)
    names: list[str] = []
    for i in range(M):
        name = " ".join(f"w{w}" for w in rng.choice(V, rng.integers(1, 4), p=word_p / word_p.sum()))
        names.append(name if name not in names else f"{name} t{i}")
    group = np.repeat(np.arange(N_GROUPS), [len(a) for a in np.array_split(np.arange(M), N_GROUPS)])
    data = pop**0.7  # the data's popularity is flatter than the recommendations': d_g != 0
    shares = np.bincount(group, weights=data / data.sum(), minlength=N_GROUPS)
    return np.array(names, dtype=object), np.cumsum(pop), group, shares


def draw(rng: np.random.Generator, cdf: np.ndarray, sets: int) -> np.ndarray:
    """(sets, N, L) title ids: L distinct titles per sample, each next one drawn in proportion to the
    popularity among the titles not yet drawn (draws with replacement, repeats skipped)."""
    out = np.empty((sets * N, L), dtype=np.int64)
    todo = np.arange(sets * N)
    while len(todo):
        cand = np.minimum(np.searchsorted(cdf, rng.random((len(todo), 8 * L)), side="right"), M - 1)
        order = np.argsort(cand, axis=1, kind="stable")
        ranked = np.take_along_axis(cand, order, axis=1)
        new = np.ones_like(ranked, dtype=bool)
        new[:, 1:] = ranked[:, 1:] != ranked[:, :-1]
        first = np.zeros_like(new)
        np.put_along_axis(first, order, new, axis=1)  # first occurrence of each title in its row
        done = first.sum(axis=1) >= L
        firsts = np.argsort(~first, axis=1, kind="stable")[:, :L]  # positions of the first L titles
        out[todo[done]] = np.take_along_axis(cand, firsts, axis=1)[done]
        todo = todo[~done]
    return out.reshape(sets, N, L)


def reference_statistics(ids: np.ndarray, names, group, shares) -> dict[str, np.ndarray]:
    """The definitions of docs/method.md section 6, written independently of flowrec, per test set."""
    sets = ids.shape[0]
    vocab: dict[str, int] = {}
    pairs = [(i, vocab.setdefault(w, len(vocab))) for i, t in enumerate(names) for w in t.split()]
    title_words = np.zeros((M, len(vocab)))
    np.add.at(title_words, tuple(np.array(pairs).T), 1.0)
    onehot = np.eye(N_GROUPS)[group]

    def title_counts(k: int) -> np.ndarray:
        flat = (ids[..., :k] + (np.arange(sets) * M)[:, None, None]).ravel()
        return np.bincount(flat, minlength=sets * M).reshape(sets, M).astype(np.float64)

    out = {}
    for k in FAIRNESS_KS:
        counts = title_counts(k) @ onehot
        d = counts / counts.sum(axis=1, keepdims=True) - shares
        out[f"DGU@{k}"], out[f"MGU@{k}"] = d.max(axis=1) - d.min(axis=1), np.abs(d).mean(axis=1)
    titles = title_counts(L)
    words = titles @ title_words
    p = words / words.sum(axis=1, keepdims=True)
    out["H"] = -np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0).sum(axis=1)
    out["TTR"] = (words > 0).sum(axis=1) / words.sum(axis=1)
    out[f"Coverage@{L}"] = (titles > 0).sum(axis=1) / M
    tail = titles @ onehot
    out[f"TailShare@{L}"] = tail[:, -3:].sum(axis=1) / tail.sum(axis=1)
    return out


def test_jackknife_intervals_cover_the_statistic_at_this_test_set_size() -> None:
    rng = np.random.default_rng(2025)
    names, cdf, group, shares = catalogue(rng)
    title_group = {t: int(g) for t, g in zip(names, group, strict=True)}
    fresh = [reference_statistics(draw(rng, cdf, 100), names, group, shares) for _ in range(FRESH // 100)]
    expected = {m: np.concatenate([f[m] for f in fresh]).mean() for m in fresh[0]}
    reps = np.concatenate([draw(rng, cdf, 100) for _ in range(REPS // 100)])
    reference = reference_statistics(reps, names, group, shares)
    settings = MetricsSettings([1], FAIRNESS_KS, 10, 0, 0.95, GROUPS)
    covered = dict.fromkeys(expected, 0)
    boot_covered = dict.fromkeys(expected, 0)
    for r, rep in enumerate(reps):
        lists = [list(names[row]) for row in rep]
        inputs = ScoringInputs(np.arange(N), lists, [""] * N, title_group, list(shares), M)
        # the evaluate stage's path: per-sample table, point values, intervals
        scores, table = evaluate_inputs(inputs, dataclasses.replace(settings, bootstrap_seed=r), L)
        boots = set_values(table, resample_weights(N, 50, r), shares, M, FAIRNESS_KS, L)
        for metric, target in expected.items():
            point, (lo, hi) = scores[metric], scores["ci"][metric]
            # the library's value is the independent definition's
            assert point == pytest.approx(reference[metric][r], rel=0, abs=1e-12), metric
            assert lo <= point <= hi, metric
            covered[metric] += lo <= target <= hi
            b_lo, b_hi = percentile_interval(boots[metric], 0.95)
            boot_covered[metric] += b_lo <= target <= b_hi
    coverage = {m: c / REPS for m, c in covered.items()}
    print(
        "coverage (jackknife, old percentile bootstrap):",
        {m: (coverage[m], boot_covered[m] / REPS) for m in coverage},
    )
    for metric, share in coverage.items():
        assert 0.90 <= share <= 0.99, (metric, share, coverage)
    # the old percentile bootstrap misses the distinct-word and distinct-title statistics
    assert boot_covered["TTR"] / REPS < 0.5 and boot_covered[f"Coverage@{L}"] / REPS < 0.5, boot_covered


def test_metric_intervals_are_this_composition_on_one_test_set() -> None:
    rng = np.random.default_rng(7)
    names, cdf, group, shares = catalogue(rng)
    title_group = {t: int(g) for t, g in zip(names, group, strict=True)}
    lists = [list(names[row]) for row in draw(rng, cdf, 1)[0]]
    table = per_sample_table(
        range(N), lists, [lists[3][0]] * N, title_group, N_GROUPS, [1, 5], FAIRNESS_KS, L
    )
    settings = MetricsSettings([1, 5], FAIRNESS_KS, 50, 11, 0.9, 30)
    point = point_values(table, shares, M, settings.ks, FAIRNESS_KS, L)
    ci = metric_intervals(table, point, shares, M, L, settings)
    replicates = set_values(
        table, leave_group_out_weights(jackknife_labels(N, 30, 11)), shares, M, FAIRNESS_KS, L
    )
    for metric, values in replicates.items():
        assert ci[metric] == list(jackknife_interval(point[metric], values, 0.9, metric_bounds(metric))), (
            metric
        )
    assert ci["HR@5"][0] <= point["HR@5"] <= ci["HR@5"][1]
    assert set(ci) == {m for m, v in point.items() if isinstance(v, float)}


def test_a_one_sample_set_has_no_interval() -> None:
    table = per_sample_table([0], [["a b", "c"]], ["a b"], {}, 2, [1], [1], 2)
    point = point_values(table, [0.5, 0.5], 3, [1], [1], 2)
    ci = metric_intervals(table, point, [0.5, 0.5], 3, 2, MetricsSettings([1], [1], 10, 0, 0.95, 10))
    assert all(np.isnan(b) for bounds in ci.values() for b in bounds)

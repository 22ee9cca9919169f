"""The one definition of every table metric, its point value and its interval (docs/method.md section 6).

`per_sample_table` computes once what each test sample contributes: a hit and an NDCG gain per K,
its recommendations per popularity group at each K, and its recommended titles (from which its words
and the titles it covers follow). `metric_values` is the definition of every metric of the results
table as a statistic of those rows under sample weights (a (rows, n) matrix, flowrec.bootstrap):
HR/NDCG are weighted means; DGU/MGU/TailShare come from the weighted group counts, H/TTR from the
weighted word counts and coverage from the weighted title counts, since none of them is a mean of
per-sample values. The point value is the statistic under unit weights (`point_values`); the
intervals (`metric_intervals`, `paired_differences`) evaluate the same function under bootstrap or
jackknife weights, so a point value and its interval cannot follow two definitions.

Which metric gets which interval (`interval_method`): the means over samples (HR, NDCG) a percentile
bootstrap; the statistics of the whole recommendation set (DGU, MGU, TailShare, H, TTR, Coverage) a
grouped jackknife t interval, because a bootstrap resample repeats samples and so only loses distinct
titles and words: its percentile interval of such a statistic is biased and can exclude the value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from flowrec.bootstrap import (
    grouped_totals,
    jackknife_interval,
    jackknife_labels,
    leave_group_out_weights,
    percentile_interval,
    resample_weights,
)
from flowrec.metrics import FIGURE_K, TAIL_GROUPS, MetricsSettings, ScoringInputs, target_ranks

# Metrics that are means of per-sample values: their bootstrap distribution is centred on the mean.
MEAN_PREFIXES = ("HR@", "NDCG@")
BOOTSTRAP, JACKKNIFE = "percentile bootstrap", "grouped jackknife"


def interval_method(metric: str) -> str:
    """The interval of a metric: BOOTSTRAP for a mean over samples, JACKKNIFE for a set statistic."""
    return BOOTSTRAP if metric.startswith(MEAN_PREFIXES) else JACKKNIFE


def metric_bounds(metric: str) -> tuple[float, float]:
    """The range a set statistic can take, to which its jackknife interval is cut: shares (TTR,
    Coverage, TailShare) lie in [0, 1]; DGU, MGU and H are >= 0."""
    return (
        (0.0, 1.0) if metric == "TTR" or metric.startswith(("Coverage@", "TailShare@")) else (0.0, math.inf)
    )


def group_cutoffs(ks: Sequence[int], fairness_ks: Sequence[int], list_k: int) -> list[int]:
    """The K of the stored per-sample group counts: DGU/MGU's cut-offs, the list (TailShare) and the
    K of the `group_shares@K` lists of the metrics file (every K of ks and fairness_ks, FIGURE_K)."""
    return sorted({*ks, *fairness_ks, min(FIGURE_K, list_k), list_k})


def per_sample_table(
    sample_ids: Sequence[int],
    rec_titles: Sequence[Sequence[str]],
    target_titles: Sequence[str],
    title_group: Mapping[str, int],
    n_groups: int,
    ks: Sequence[int],
    fairness_ks: Sequence[int],
    list_k: int,
) -> pd.DataFrame:
    """One row per sample (docs/formats.md, metrics/samples/{method}.parquet): `sample`, `target`,
    `titles` (the list cut to list_k), `hit@K` and `gain@K` per K of ks, `group_counts@K` (list of
    n_groups counts; a title outside `title_group` counts in the last group) per K of group_cutoffs."""
    lists = [list(t[:list_k]) for t in rec_titles]
    out = pd.DataFrame({"sample": np.asarray(sample_ids, dtype=np.int64), "target": list(target_titles)})
    out["titles"] = lists
    for k in sorted(ks):
        ranks = target_ranks(lists, target_titles, k)
        out[f"hit@{k}"] = (ranks >= 0).astype(np.int64)
        out[f"gain@{k}"] = np.where(ranks >= 0, 1.0 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0)
    owner = np.repeat(np.arange(len(lists)), [len(t) for t in lists])
    position = np.concatenate([np.arange(len(t)) for t in lists]) if lists else np.zeros(0, np.int64)
    flat = pd.Series([t for titles in lists for t in titles], dtype=object)
    group = flat.map(title_group).fillna(n_groups - 1).to_numpy(dtype=np.int64)
    if len(group) and (group.min() < 0 or group.max() >= n_groups):
        raise ValueError(f"popularity groups must lie in [0, {n_groups}); got {group.min()}..{group.max()}")
    for k in group_cutoffs(ks, fairness_ks, list_k):
        keep = position < k
        counts = np.zeros((len(lists), n_groups), dtype=np.int64)
        np.add.at(counts, (owner[keep], group[keep]), 1)
        out[f"group_counts@{k}"] = list(counts)
    return out


def _entries(lists: Sequence[Sequence[str]], split_words: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """(owner sample, key id, number of keys) of every word (split_words) or title of every list.

    Keys are numbered in sorted order, so that the entropy sums its terms in one fixed order.
    """
    per_sample = [" ".join(t).split() if split_words else list(t) for t in lists]
    owner = np.repeat(np.arange(len(per_sample)), [len(x) for x in per_sample])
    keys, uniques = pd.factorize(pd.Series([x for row in per_sample for x in row], dtype=object), sort=True)
    return owner, keys.astype(np.int64), len(uniques)


@dataclass(frozen=True)
class SetEntries:
    """What the set statistics read from a per-sample table, extracted once per table (set_entries),
    since the point value and every interval evaluate them under other weights."""

    words: tuple[np.ndarray, np.ndarray, int]  # _entries of the words of every list
    titles: tuple[np.ndarray, np.ndarray, int]  # _entries of the titles of every list
    group_counts: dict[int, np.ndarray]  # K -> (n, n_groups) float64 counts of the first K titles


def set_entries(table: pd.DataFrame) -> SetEntries:
    """The SetEntries of a per-sample table (every group_counts@K column it holds)."""
    lists = table["titles"].tolist()
    counts = {
        int(c.split("@")[1]): np.stack(table[c].to_numpy()).astype(np.float64).reshape(len(table), -1)
        for c in table.columns
        if c.startswith("group_counts@")
    }
    return SetEntries(_entries(lists, split_words=True), _entries(lists, split_words=False), counts)


def _weighted_mean(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per row of weights, sum_i w_i v_i / sum_i w_i. An elementwise product summed along the row (not a
    matrix product), so that unit weights give exactly values.mean()."""
    return (weights * values).sum(axis=1) / weights.sum(axis=1)


def group_share_rows(entries: SetEntries, weights: np.ndarray, k: int) -> np.ndarray:
    """(rows, n_groups): each group's share of all weighted top-k recommendations (0 without any)."""
    counts = weights @ entries.group_counts[k]
    total = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)


def mean_values(table: pd.DataFrame, weights: np.ndarray, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """{HR@K, NDCG@K: (rows,)}: the share of samples with a hit in the top K and the mean NDCG gain."""
    out: dict[str, np.ndarray] = {}
    for k in sorted(ks):
        out[f"HR@{k}"] = _weighted_mean(weights, table[f"hit@{k}"].to_numpy(np.float64))
        out[f"NDCG@{k}"] = _weighted_mean(weights, table[f"gain@{k}"].to_numpy(np.float64))
    return out


def set_values(
    table: pd.DataFrame,
    weights: np.ndarray,
    data_shares: Sequence[float],
    n_titles: int,
    fairness_ks: Sequence[int],
    list_k: int,
    entries: SetEntries | None = None,
) -> dict[str, np.ndarray]:
    """{metric: (rows,)} of the statistics of the whole recommendation set under each row of weights.

    DGU@K = max_g d_g - min_g d_g, MGU@K = mean_g |d_g| with d_g = rec share - data share of group g;
    H = base-2 entropy and TTR = types / tokens of the words of all lists; Coverage@list_k = distinct
    titles / n_titles; TailShare@list_k = share of the TAIL_GROUPS least popular groups.
    `entries`: set_entries(table), when the caller already has it.
    """
    entries = set_entries(table) if entries is None else entries
    out: dict[str, np.ndarray] = {}
    data = np.asarray(data_shares, dtype=np.float64)
    for k in sorted(fairness_ks):
        d = group_share_rows(entries, weights, k) - data
        out[f"DGU@{k}"] = d.max(axis=1) - d.min(axis=1)
        out[f"MGU@{k}"] = np.abs(d).mean(axis=1)
    words = grouped_totals(weights, *entries.words)
    tokens = words.sum(axis=1)
    p = np.divide(words, tokens[:, None], out=np.zeros_like(words), where=tokens[:, None] > 0)
    logp = np.log2(p, out=np.zeros_like(p), where=p > 0)
    out["H"] = 0.0 - (p * logp).sum(axis=1)  # 0.0 - x: no -0.0 for a set without words
    out["TTR"] = np.divide((words > 0).sum(axis=1), tokens, out=np.zeros_like(tokens), where=tokens > 0)
    titles = grouped_totals(weights, *entries.titles)
    out[f"Coverage@{list_k}"] = (titles > 0).sum(axis=1) / n_titles
    out[f"TailShare@{list_k}"] = group_share_rows(entries, weights, list_k)[:, -TAIL_GROUPS:].sum(axis=1)
    return out


def metric_values(
    table: pd.DataFrame,
    weights: np.ndarray,
    data_shares: Sequence[float],
    n_titles: int,
    ks: Sequence[int],
    fairness_ks: Sequence[int],
    list_k: int,
    entries: SetEntries | None = None,
) -> dict[str, np.ndarray]:
    """{metric: (rows,) values} of every scalar table metric under each row of `weights` (rows, n):
    mean_values then set_values, in the order of the metrics file."""
    n = len(table)
    if weights.ndim != 2 or weights.shape[1] != n:
        raise ValueError(f"weights of shape {weights.shape} for a table of {n} samples")
    return {
        **mean_values(table, weights, ks),
        **set_values(table, weights, data_shares, n_titles, fairness_ks, list_k, entries),
    }


def point_values(
    table: pd.DataFrame,
    data_shares: Sequence[float],
    n_titles: int,
    ks: Sequence[int],
    fairness_ks: Sequence[int],
    list_k: int,
    entries: SetEntries | None = None,
) -> dict[str, object]:
    """The metrics file's values (docs/formats.md): `samples`, every metric_values statistic under unit
    weights, `group_shares_data` and `group_shares@K` (lists, for the popularity figure)."""
    entries = set_entries(table) if entries is None else entries
    ones = np.ones((1, len(table)))
    values = metric_values(table, ones, data_shares, n_titles, ks, fairness_ks, list_k, entries)
    out: dict[str, object] = {"samples": len(table), **{m: float(v[0]) for m, v in values.items()}}
    out["group_shares_data"] = [float(s) for s in data_shares]
    for k in sorted({*ks, *fairness_ks, min(FIGURE_K, list_k)}):
        out[f"group_shares@{k}"] = [float(s) for s in group_share_rows(entries, ones, k)[0]]
    return out


def _jackknife_weights(n: int, settings: MetricsSettings) -> np.ndarray:
    return leave_group_out_weights(jackknife_labels(n, settings.jackknife_groups, settings.bootstrap_seed))


def metric_intervals(
    table: pd.DataFrame,
    point: Mapping[str, object],
    data_shares: Sequence[float],
    n_titles: int,
    list_k: int,
    settings: MetricsSettings,
    entries: SetEntries | None = None,
) -> dict[str, list[float]]:
    """{metric: [lo, hi]} at settings.confidence: the percentile interval over settings.bootstrap_draws
    resamples for HR/NDCG, the grouped-jackknife t interval around `point` (point_values) for the set
    statistics. Fewer than two samples leave no spread to estimate: the bounds are NaN."""
    n = len(table)
    level = settings.confidence
    metrics = [m for m, v in point.items() if isinstance(v, float)]
    if n < 2:
        return {m: [float("nan"), float("nan")] for m in metrics}
    boot = mean_values(
        table, resample_weights(n, settings.bootstrap_draws, settings.bootstrap_seed), settings.ks
    )
    jack_w = _jackknife_weights(n, settings)
    jack = set_values(table, jack_w, data_shares, n_titles, settings.fairness_ks, list_k, entries)
    out = {}
    for m in metrics:
        interval = (
            percentile_interval(boot[m], level)
            if m in boot
            else jackknife_interval(point[m], jack[m], level, metric_bounds(m))
        )
        out[m] = list(interval)
    return out


def evaluate_inputs(
    inputs: ScoringInputs, settings: MetricsSettings, list_k: int
) -> tuple[dict[str, object], pd.DataFrame]:
    """(point values with `ci` intervals, the per-sample table) of one method's scoring inputs."""
    table = per_sample_table(
        inputs.sample_ids,
        inputs.rec_titles,
        inputs.target_titles,
        inputs.title_group,
        len(inputs.data_shares),
        settings.ks,
        settings.fairness_ks,
        list_k,
    )
    entries = set_entries(table)
    args = (inputs.data_shares, inputs.n_titles)
    point = point_values(table, *args, settings.ks, settings.fairness_ks, list_k, entries)
    ci = metric_intervals(table, point, *args, list_k, settings, entries)
    return {**point, "ci": ci}, table


def paired_differences(
    table: pd.DataFrame,
    baseline: pd.DataFrame,
    data_shares: Sequence[float],
    n_titles: int,
    list_k: int,
    settings: MetricsSettings,
) -> pd.DataFrame:
    """method - baseline on the samples both scored. HR/NDCG: a paired percentile bootstrap (every draw
    resamples the same samples for both); the set statistics: a paired grouped jackknife (every
    replicate deletes the same samples from both) t interval around the difference. One row per
    metric: difference, lo, hi, excludes_zero, samples."""
    common = np.intersect1d(table["sample"].to_numpy(), baseline["sample"].to_numpy())
    if len(common) == 0:
        raise ValueError("paired comparison: the two methods share no test sample")
    a = table.set_index("sample").loc[common].reset_index()
    b = baseline.set_index("sample").loc[common].reset_index()
    n, level, ks, fks = len(common), settings.confidence, settings.ks, settings.fairness_ks
    ones = np.ones((1, n))
    entries_a, entries_b = set_entries(a), set_entries(b)
    point_a = metric_values(a, ones, data_shares, n_titles, ks, fks, list_k, entries_a)
    point_b = metric_values(b, ones, data_shares, n_titles, ks, fks, list_k, entries_b)
    if n >= 2:
        boot_w = resample_weights(n, settings.bootstrap_draws, settings.bootstrap_seed)
        boot_a, boot_b = mean_values(a, boot_w, ks), mean_values(b, boot_w, ks)
        jack_w = _jackknife_weights(n, settings)
        jack_a = set_values(a, jack_w, data_shares, n_titles, fks, list_k, entries_a)
        jack_b = set_values(b, jack_w, data_shares, n_titles, fks, list_k, entries_b)
    rows = []
    for metric in point_a:
        difference = float(point_a[metric][0] - point_b[metric][0])
        if n < 2:
            lo = hi = float("nan")
        elif metric in boot_a:
            lo, hi = percentile_interval(boot_a[metric] - boot_b[metric], level)
        else:
            # a difference of two statistics in [lo, hi] lies in [lo - hi, hi - lo]
            low, high = metric_bounds(metric)
            lo, hi = jackknife_interval(
                difference, jack_a[metric] - jack_b[metric], level, (low - high, high - low)
            )
        rows.append(
            {
                "metric": metric,
                "difference": difference,
                "lo": lo,
                "hi": hi,
                "excludes_zero": bool(lo > 0 or hi < 0),
                "samples": n,
            }
        )
    return pd.DataFrame(rows)

"""Per-sample metric values and the bootstrap of every table metric (docs/method.md section 6).

`per_sample_table` computes once what each test sample contributes: a hit and an NDCG gain per K,
its recommendations per popularity group at each K, and its recommended titles (from which its words
and the titles it covers follow). `metric_draws` recomputes every metric of the results table from
resampling weights (flowrec.bootstrap): HR/NDCG are weighted means; DGU/MGU/TailShare come from the
resampled group counts, H/TTR from the resampled word counts and coverage from the resampled title
counts, since none of them is a mean of per-sample values. With weights of ones it gives the metrics
of flowrec.metrics.evaluate_rankings (tests/unit/test_bootstrap.py checks that they agree).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from flowrec.bootstrap import grouped_totals, percentile_interval, resample_weights
from flowrec.metrics import TAIL_GROUPS, target_ranks


def group_cutoffs(fairness_ks: Sequence[int], list_k: int) -> list[int]:
    """The K of the stored per-sample group counts: DGU/MGU's cut-offs and the list (TailShare)."""
    return sorted({*fairness_ks, list_k})


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
    for k in group_cutoffs(fairness_ks, list_k):
        keep = position < k
        counts = np.zeros((len(lists), n_groups), dtype=np.int64)
        np.add.at(counts, (owner[keep], group[keep]), 1)
        out[f"group_counts@{k}"] = list(counts)
    return out


def _entries(lists: Sequence[Sequence[str]], split_words: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """(owner sample, key id, number of keys) of every word (split_words) or title of every list."""
    per_sample = [" ".join(t).split() if split_words else list(t) for t in lists]
    owner = np.repeat(np.arange(len(per_sample)), [len(x) for x in per_sample])
    keys, uniques = pd.factorize(pd.Series([x for row in per_sample for x in row], dtype=object))
    return owner, keys.astype(np.int64), len(uniques)


def metric_draws(
    table: pd.DataFrame,
    weights: np.ndarray,
    data_shares: Sequence[float],
    n_titles: int,
    ks: Sequence[int],
    fairness_ks: Sequence[int],
    list_k: int,
) -> dict[str, np.ndarray]:
    """{metric: (draws,) values} of every scalar table metric under each row of `weights` (draws, n)."""
    n = len(table)
    if weights.shape[1] != n:
        raise ValueError(f"weights for {weights.shape[1]} samples, table has {n}")
    out: dict[str, np.ndarray] = {}
    for k in sorted(ks):
        out[f"HR@{k}"] = weights @ table[f"hit@{k}"].to_numpy(np.float64) / n
        out[f"NDCG@{k}"] = weights @ table[f"gain@{k}"].to_numpy(np.float64) / n
    data = np.asarray(data_shares, dtype=np.float64)
    for k in group_cutoffs(fairness_ks, list_k):
        counts = weights @ np.stack(table[f"group_counts@{k}"].to_numpy()).astype(np.float64)
        total = counts.sum(axis=1, keepdims=True)
        shares = np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)
        if k in fairness_ks:
            d = shares - data
            out[f"DGU@{k}"] = d.max(axis=1) - d.min(axis=1)
            out[f"MGU@{k}"] = np.abs(d).mean(axis=1)
        if k == list_k:
            out[f"TailShare@{k}"] = shares[:, -TAIL_GROUPS:].sum(axis=1)
    lists = table["titles"].tolist()
    words = grouped_totals(weights, *_entries(lists, split_words=True))
    tokens = words.sum(axis=1)
    p = np.divide(words, tokens[:, None], out=np.zeros_like(words), where=tokens[:, None] > 0)
    logp = np.log2(p, out=np.zeros_like(p), where=p > 0)
    out["H"] = -(p * logp).sum(axis=1)
    out["TTR"] = np.divide((words > 0).sum(axis=1), tokens, out=np.zeros_like(tokens), where=tokens > 0)
    titles = grouped_totals(weights, *_entries(lists, split_words=False))
    out[f"Coverage@{list_k}"] = (titles > 0).sum(axis=1) / n_titles
    return out


def bootstrap_intervals(
    table: pd.DataFrame,
    data_shares: Sequence[float],
    n_titles: int,
    ks: Sequence[int],
    fairness_ks: Sequence[int],
    list_k: int,
    draws: int,
    seed: int,
    level: float,
) -> dict[str, list[float]]:
    """{metric: [lo, hi]}: the percentile interval of every metric over `draws` resamples of the samples."""
    weights = resample_weights(len(table), draws, seed)
    values = metric_draws(table, weights, data_shares, n_titles, ks, fairness_ks, list_k)
    return {m: list(percentile_interval(v, level)) for m, v in values.items()}


def paired_differences(
    table: pd.DataFrame,
    baseline: pd.DataFrame,
    data_shares: Sequence[float],
    n_titles: int,
    ks: Sequence[int],
    fairness_ks: Sequence[int],
    list_k: int,
    draws: int,
    seed: int,
    level: float,
) -> pd.DataFrame:
    """method - baseline on the samples both scored, by a paired bootstrap: every draw resamples the
    same samples for both. One row per metric: difference, lo, hi, excludes_zero, samples."""
    common = np.intersect1d(table["sample"].to_numpy(), baseline["sample"].to_numpy())
    if len(common) == 0:
        raise ValueError("paired bootstrap: the two methods share no test sample")
    a = table.set_index("sample").loc[common].reset_index()
    b = baseline.set_index("sample").loc[common].reset_index()
    args = (data_shares, n_titles, ks, fairness_ks, list_k)
    ones = np.ones((1, len(common)))
    point_a, point_b = metric_draws(a, ones, *args), metric_draws(b, ones, *args)
    weights = resample_weights(len(common), draws, seed)
    draws_a, draws_b = metric_draws(a, weights, *args), metric_draws(b, weights, *args)
    rows = []
    for metric in draws_a:
        lo, hi = percentile_interval(draws_a[metric] - draws_b[metric], level)
        rows.append(
            {
                "metric": metric,
                "difference": float(point_a[metric][0] - point_b[metric][0]),
                "lo": lo,
                "hi": hi,
                "excludes_zero": bool(lo > 0 or hi < 0),
                "samples": len(common),
            }
        )
    return pd.DataFrame(rows)

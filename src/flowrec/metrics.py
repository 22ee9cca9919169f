"""Evaluation metrics of the paper (docs/method.md section 6): accuracy, popularity fairness, diversity.

Everything works on titles: a recommendation list is a ranked list of distinct title strings and a
sample's target is the title of its target item. Several items may share a title (Amazon CDs has
464 duplicate titles); recommending any of them counts as a hit on the target, since the generated
text cannot tell them apart. Pure functions on plain Python/numpy data; `evaluate_prediction_files`
is the only one that reads files (the contract of docs/formats.md). The distribution divergences of
the distribution-fitting experiment are flowrec.divergences.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from flowrec.io import read_items, read_parquet
from flowrec.subsets import seeded_subset

log = logging.getLogger(__name__)

# The paper's tail: recommendations from the three least popular of the popularity groups.
TAIL_GROUPS = 3
# The paper's Figure 2 shows top-5 lists; the figure stage reads the group shares stored at this K.
FIGURE_K = 5


@dataclass(frozen=True)
class MetricsSettings:
    """The `metrics:` config block; build it with flowrec.settings.settings_from_block(.., "metrics")."""

    ks: list[int]  # cut-offs for HR and NDCG (each <= decode.num_return)
    fairness_ks: list[int]  # cut-offs for DGU and MGU (each <= decode.num_return)
    bootstrap_draws: int  # resamples of the test samples per interval (flowrec.bootstrap)
    bootstrap_seed: int  # seed of the resampling index matrix
    confidence: float  # level of the percentile intervals (0.95)


def check_cutoffs(ks: Sequence[int], fairness_ks: Sequence[int], num_return: int) -> None:
    """Refuse any @K larger than the returned list (the published evaluation reported @20 from 10 beams)."""
    for name, values in (("metrics.ks", ks), ("metrics.fairness_ks", fairness_ks)):
        too_large = [k for k in values if k > num_return]
        if too_large:
            raise ValueError(
                f"config: {name} {list(values)} has K={too_large} larger than decode.num_return={num_return}; "
                f"an @K metric needs at least K returned titles per sample"
            )


def eval_subset(n_test: int, n: int | None, seed: int) -> np.ndarray:
    """Test rows that are decoded and scored (docs/formats.md): `flowrec.subsets.seeded_subset`."""
    return seeded_subset(n_test, n, seed)


# ----------------------------------------------------------------------------------------------
# Accuracy: HR@K, NDCG@K
# ----------------------------------------------------------------------------------------------


def top_k_matrix(rec_titles: Sequence[Sequence[str]], k: int) -> np.ndarray:
    """(n_samples, k) object array of the first k titles of each list, padded with None."""
    mat = np.full((len(rec_titles), k), None, dtype=object)
    for i, titles in enumerate(rec_titles):  # one pass over samples to pad ragged lists
        row = list(titles[:k])
        mat[i, : len(row)] = row
    return mat


def target_ranks(rec_titles: Sequence[Sequence[str]], target_titles: Sequence[str], k: int) -> np.ndarray:
    """0-based rank of each sample's target title in its top-k list; -1 where it is absent."""
    if len(rec_titles) != len(target_titles):
        raise ValueError(f"{len(rec_titles)} recommendation lists but {len(target_titles)} targets")
    hits = top_k_matrix(rec_titles, k) == np.asarray(target_titles, dtype=object)[:, None]  # (n, k)
    return np.where(hits.any(axis=1), hits.argmax(axis=1), -1)


def accuracy_at_k(
    rec_titles: Sequence[Sequence[str]], target_titles: Sequence[str], k: int
) -> dict[str, float]:
    """HR@K = share of samples whose target title is in the top K; NDCG@K = mean of 1/log2(rank+2)."""
    ranks = target_ranks(rec_titles, target_titles, k)
    hit = ranks >= 0
    gains = np.where(hit, 1.0 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0)
    return {f"HR@{k}": float(hit.mean()), f"NDCG@{k}": float(gains.mean())}


# ----------------------------------------------------------------------------------------------
# Popularity fairness: DGU@K, MGU@K, tail share
# ----------------------------------------------------------------------------------------------


def group_counts(
    rec_titles: Sequence[Sequence[str]], k: int, title_group: Mapping[str, int], n_groups: int
) -> np.ndarray:
    """Recommendations per popularity group among all top-k titles, shape (n_groups,), int64.

    A title absent from `title_group` goes to the least popular group (n_groups - 1) and is counted
    like any other title (the published code set that group's count to 1 instead).
    """
    flat = pd.Series([t for titles in rec_titles for t in titles[:k]], dtype=object)
    groups = flat.map(title_group).fillna(n_groups - 1).to_numpy(dtype=np.int64)
    if len(groups) and (groups.min() < 0 or groups.max() >= n_groups):
        raise ValueError(f"popularity groups must lie in [0, {n_groups}); got {groups.min()}..{groups.max()}")
    return np.bincount(groups, minlength=n_groups)


def group_shares(counts: np.ndarray) -> np.ndarray:
    """Counts -> shares (all zeros when there is nothing to share)."""
    total = counts.sum()
    return counts / total if total > 0 else np.zeros(len(counts), dtype=np.float64)


def fairness_at_k(
    rec_titles: Sequence[Sequence[str]], k: int, title_group: Mapping[str, int], data_shares: Sequence[float]
) -> dict[str, float]:
    """DGU@K = max_g d_g - min_g d_g, MGU@K = mean_g |d_g|, d_g = rec share of g - data share of g.

    Groups without recommendations have rec share 0; docs/method.md section 6.
    """
    data = np.asarray(data_shares, dtype=np.float64)
    d = group_shares(group_counts(rec_titles, k, title_group, len(data))) - data
    return {f"DGU@{k}": float(d.max() - d.min()), f"MGU@{k}": float(np.abs(d).mean())}


def tail_share(
    rec_titles: Sequence[Sequence[str]], k: int, title_group: Mapping[str, int], n_groups: int
) -> float:
    """Share of all top-k recommendations whose title is in one of the TAIL_GROUPS least popular groups."""
    counts = group_counts(rec_titles, k, title_group, n_groups)
    return float(group_shares(counts)[-TAIL_GROUPS:].sum())


def catalogue_coverage(rec_titles: Sequence[Sequence[str]], k: int, n_titles: int) -> float:
    """Distinct titles recommended in any top-k list / all titles of the catalogue."""
    return len({t for titles in rec_titles for t in titles[:k]}) / n_titles


# ----------------------------------------------------------------------------------------------
# Diversity: word entropy H and type-token ratio TTR
# ----------------------------------------------------------------------------------------------


def word_diversity(rec_titles: Sequence[Sequence[str]]) -> dict[str, float]:
    """H = entropy (log2) of the whitespace-separated words over all recommended titles; TTR = types/tokens.

    The caller passes the full returned lists (top num_return, the paper's top 10): every title in
    every list counts once per occurrence across lists.
    """
    words = " ".join(t for titles in rec_titles for t in titles).split()
    if not words:
        return {"H": 0.0, "TTR": 0.0}
    _, counts = np.unique(np.asarray(words, dtype=object), return_counts=True)
    p = counts / counts.sum()
    return {"H": float(-(p * np.log2(p)).sum()), "TTR": len(counts) / len(words)}


# ----------------------------------------------------------------------------------------------
# All metrics of one method
# ----------------------------------------------------------------------------------------------


def evaluate_rankings(
    rec_titles: Sequence[Sequence[str]],
    target_titles: Sequence[str],
    title_group: Mapping[str, int],
    data_shares: Sequence[float],
    n_titles: int,
    settings: MetricsSettings,
    list_k: int,
) -> dict[str, object]:
    """Every metric of docs/method.md section 6 plus coverage and tail share, as one flat dict.

    rec_titles: ranked distinct titles per sample (cut to `list_k`, the decoder's num_return);
    HR/NDCG at settings.ks; DGU/MGU at settings.fairness_ks; H, TTR, Coverage@list_k and
    TailShare@list_k on the full lists. `group_shares@K` (lists) serve the popularity figure.
    """
    check_cutoffs(settings.ks, settings.fairness_ks, list_k)
    lists = [list(titles[:list_k]) for titles in rec_titles]
    n_groups = len(data_shares)
    out: dict[str, object] = {"samples": len(lists)}
    for k in sorted(settings.ks):
        out.update(accuracy_at_k(lists, target_titles, k))
    for k in sorted(settings.fairness_ks):
        out.update(fairness_at_k(lists, k, title_group, data_shares))
    out.update(word_diversity(lists))
    out[f"Coverage@{list_k}"] = catalogue_coverage(lists, list_k, n_titles)
    out[f"TailShare@{list_k}"] = tail_share(lists, list_k, title_group, n_groups)
    out["group_shares_data"] = [float(s) for s in data_shares]
    for k in sorted({*settings.ks, *settings.fairness_ks, min(FIGURE_K, list_k)}):
        counts = group_counts(lists, k, title_group, n_groups)
        out[f"group_shares@{k}"] = [float(s) for s in group_shares(counts)]
    return out


@dataclass(frozen=True)
class ScoringInputs:
    """What scoring one predictions file needs, read and checked by read_scoring_inputs."""

    sample_ids: np.ndarray  # test rows scored, ascending
    rec_titles: list[list[str]]  # ranked titles per scored row
    target_titles: list[str]  # target title per scored row
    title_group: dict[str, int]  # popularity group of every title
    data_shares: list[float]  # each group's share of the train histories
    n_titles: int  # titles of the catalogue


def read_scoring_inputs(
    predictions: str | Path,
    test: str | Path,
    items: str | Path,
    groups: str | Path,
    groups_json: str | Path,
    subset: np.ndarray | None = None,
) -> ScoringInputs:
    """Read one predictions file (docs/formats.md) with the test targets and the popularity groups.

    subset None: the samples present in the file. Otherwise only those rows (SASRec and the reference
    rows predict every test sample; they are cut to the LLM methods' seeded subset), each of which must
    be present.
    """
    pred = read_parquet(predictions, columns=["sample", "titles"])
    n_test = read_parquet(test, columns=["target"]).shape[0]
    if pred["sample"].duplicated().any() or not pred["sample"].between(0, n_test - 1).all():
        raise ValueError(
            f"{predictions}: column `sample` must hold distinct rows of {test} (0..{n_test - 1})"
        )
    if subset is not None:
        missing = np.setdiff1d(subset, pred["sample"].to_numpy())
        if len(missing):
            raise ValueError(
                f"{predictions}: {len(missing)} test samples of the subset missing, e.g. {missing[:5]}"
            )
        pred = pred[pred["sample"].isin(subset)]
    pred = pred.sort_values("sample")
    for sample, titles in zip(pred["sample"], pred["titles"], strict=True):
        if len(set(titles)) != len(titles):
            raise ValueError(f"{predictions}: sample {sample}: titles are not distinct (docs/formats.md)")
    item_title = read_items(items, columns=["item_id", "title"])["title"]  # index = item id
    targets = read_parquet(test, columns=["target"])["target"].to_numpy()[pred["sample"].to_numpy()]
    unknown = np.setdiff1d(targets, item_title.index.to_numpy())
    if len(unknown):
        raise ValueError(f"{test}: target item ids {unknown[:5]} are not in {items}")
    group_table = read_parquet(groups, columns=["title", "group"])
    return ScoringInputs(
        sample_ids=pred["sample"].to_numpy(np.int64),
        rec_titles=[list(t) for t in pred["titles"]],
        target_titles=item_title.loc[targets].tolist(),
        title_group=dict(zip(group_table["title"], group_table["group"].astype(int), strict=True)),
        data_shares=[float(x) for x in json.loads(Path(groups_json).read_text())["shares"]],
        n_titles=len(group_table),
    )


def evaluate_prediction_files(
    predictions: str | Path,
    test: str | Path,
    items: str | Path,
    groups: str | Path,
    groups_json: str | Path,
    settings: MetricsSettings,
    list_k: int,
    subset: np.ndarray | None = None,
) -> dict[str, object]:
    """Score one predictions file (docs/formats.md) against the test targets (read_scoring_inputs)."""
    inputs = read_scoring_inputs(predictions, test, items, groups, groups_json, subset)
    return evaluate_rankings(
        rec_titles=inputs.rec_titles,
        target_titles=inputs.target_titles,
        title_group=inputs.title_group,
        data_shares=inputs.data_shares,
        n_titles=inputs.n_titles,
        settings=settings,
        list_k=list_k,
    )

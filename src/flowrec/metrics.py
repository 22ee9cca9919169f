"""Evaluation inputs of the paper's metrics (docs/method.md section 6): settings, the scored subset, the
target ranks, and the reading of one predictions file.

Everything works on titles: a recommendation list is a ranked list of distinct title strings and a
sample's target is the title of its target item. Several items may share a title (Amazon CDs has
464 duplicate titles); recommending any of them counts as a hit on the target, since the generated
text cannot tell them apart. The metrics themselves, their point values and intervals, are defined
once in flowrec.sample_metrics; the K check is flowrec.metric_cutoffs. `read_scoring_inputs` is the
only function that reads files (the contract of docs/formats.md). The distribution divergences of
the distribution-fitting experiment are flowrec.divergences.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
    bootstrap_draws: int  # resamples of the test samples per HR/NDCG interval (flowrec.bootstrap)
    bootstrap_seed: int  # seed of the resampling index matrix and of the jackknife's groups
    confidence: float  # level of every interval (0.95)
    jackknife_groups: int  # groups of the grouped jackknife behind the set statistics' intervals


def eval_subset(n_test: int, n: int | None, seed: int) -> np.ndarray:
    """Test rows that are decoded and scored (docs/formats.md): `flowrec.subsets.seeded_subset`."""
    return seeded_subset(n_test, n, seed)


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

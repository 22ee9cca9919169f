"""Our HR@K and NDCG@K (the point values of flowrec.sample_metrics.point_values, and the per-sample
hit@K / gain@K of flowrec.sample_metrics.per_sample_table they are computed from) against scikit-learn's top_k_accuracy_score and ndcg_score,
an independent implementation, on random recommendation lists.

The construction: the catalogue's titles are the classes; a sample's scores rank its recommended
titles first (the first title highest) and give every other title the same lowest score; its one
relevant title is the target. With lists of at least K titles, sklearn's top K are the list's first K,
so HR@K is top-k accuracy and NDCG@K (one relevant title: ideal DCG 1) is ndcg_score at k=K.
"""

import numpy as np
import pytest
from sklearn.metrics import ndcg_score, top_k_accuracy_score

from flowrec.sample_metrics import per_sample_table, point_values


def random_case(rng: np.random.Generator, n_titles: int, n_samples: int, length: int):
    """(lists of distinct titles, target titles, scores (n_samples, n_titles), target class per sample)."""
    titles = [f"title {i}" for i in range(n_titles)]
    classes = np.stack([rng.choice(n_titles, size=length, replace=False) for _ in range(n_samples)])
    in_list = rng.random(n_samples) < 0.6  # most targets somewhere in the list, the others anywhere
    target = np.where(in_list, classes[np.arange(n_samples), rng.integers(0, length, n_samples)], 0)
    target[~in_list] = rng.integers(0, n_titles, int((~in_list).sum()))
    scores = np.zeros((n_samples, n_titles))
    scores[np.arange(n_samples)[:, None], classes] = np.arange(length, 0, -1)  # first title: highest
    lists = [[titles[c] for c in row] for row in classes]
    return lists, [titles[t] for t in target], scores, target


@pytest.mark.parametrize("seed", range(20))
def test_hr_and_ndcg_agree_with_sklearn(seed):
    rng = np.random.default_rng(seed)
    n_titles, length = int(rng.integers(12, 60)), int(rng.integers(3, 11))
    lists, targets, scores, target = random_case(rng, n_titles, int(rng.integers(5, 80)), length)
    relevance = np.zeros_like(scores)
    relevance[np.arange(len(target)), target] = 1.0
    samples = per_sample_table(
        np.arange(len(lists)),
        lists,
        targets,
        {},
        n_groups=1,
        ks=range(1, length + 1),
        fairness_ks=[1],
        list_k=length,
    )
    ours = point_values(samples, [1.0], n_titles, range(1, length + 1), [1], length)
    for k in range(1, length + 1):
        hr = top_k_accuracy_score(target, scores, k=k, labels=np.arange(n_titles))
        ndcg = ndcg_score(relevance, scores, k=k)
        assert ours[f"HR@{k}"] == pytest.approx(hr, abs=1e-12), k
        assert ours[f"NDCG@{k}"] == pytest.approx(ndcg, abs=1e-12), k
        assert samples[f"hit@{k}"].mean() == pytest.approx(hr, abs=1e-12), k
        assert samples[f"gain@{k}"].mean() == pytest.approx(ndcg, abs=1e-12), k
        # per sample too: sklearn's NDCG of each row alone
        for i in rng.choice(len(lists), size=3):
            alone = ndcg_score(relevance[i : i + 1], scores[i : i + 1], k=k)
            assert samples[f"gain@{k}"].iloc[i] == pytest.approx(alone, abs=1e-12), (k, i)

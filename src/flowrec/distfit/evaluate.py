"""Generation under the target trie and the divergence table of RQ1 (docs/method.md section 6).

Every model (and the untuned base) samples titles at temperature 1 under the trie of the target titles
from the history-free prompt; the table compares T with the generated distribution R (title- and
token-level KL both ways and JS, flowrec.divergences.distribution_divergences) and, free of sampling
noise, with the model's exact constrained distribution over the titles (flowrec.sampling.title_log_probs).
The sampled columns get grouped-jackknife t intervals over the generated titles (sampled_draws under
leave-group-out weights; docs/method.md section 6): every sampled column is a statistic of the whole
draw (plug-in divergences, distinct titles), which a bootstrap resample, repeating titles, biases.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from flowrec.bootstrap import grouped_totals, jackknife_interval, jackknife_labels, leave_group_out_weights
from flowrec.distfit.methods import LABELS
from flowrec.divergences import (
    aligned_counts,
    distribution_divergences,
    js_divergence,
    js_rows,
    kl_rows,
)
from flowrec.sampling import sample_titles
from flowrec.trie import Trie


def generate_titles(
    model, trie: Trie, prompt: Sequence[int], n: int, pad_id: int, seed: int, batch_size: int = 64
) -> list[str]:
    """`n` titles sampled at temperature 1 under the trie from the history-free prompt (seeded)."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    ids = sample_titles(
        model, trie, [list(prompt)] * n, pad_id, temperature=1.0, batch_size=batch_size, generator=generator
    )
    model.train(was_training)
    return [trie.titles[i] for i in ids.tolist()]


SAMPLED_COLUMNS = [f"{lvl}_{m}" for lvl in ("title", "token") for m in ("KL_TR", "KL_RT", "JS")] + [
    "distinct"
]


def sampled_bounds(column: str, target_titles: int, generated: int) -> tuple[float, float]:
    """The range a sampled column can take, to which its interval is cut: KL >= 0, JS in [0, ln 2]
    (natural log), `distinct` in [1, min(target titles, generated titles)]."""
    if column == "distinct":
        return 1.0, float(min(target_titles, generated))
    return (0.0, math.log(2)) if column.endswith("_JS") else (0.0, math.inf)


def sampled_draws(
    target: Mapping[str, float], titles: Sequence[str], trie: Trie, weights: np.ndarray
) -> dict[str, np.ndarray]:
    """{column: (rows,)} of every sampled column under sample weights (rows, len(titles)).

    Every generated title lies in T (divergence_table checks), so the union support of T and R is T's
    titles (and their tokens) in every draw: the divergences are computed over that fixed support, which
    gives distribution_divergences' values (tests/unit/test_distfit.py checks it with unit weights).
    """
    names = list(target)
    index = {t: i for i, t in enumerate(names)}
    title_of = np.array([index[t] for t in titles], dtype=np.int64)
    counts = grouped_totals(weights, np.arange(len(titles)), title_of, len(names))  # (draws, S)
    target_counts = np.array([target[t] for t in names], dtype=np.float64)
    tok = [np.asarray(trie.title_token_ids(trie.title_index[t]), dtype=np.int64) for t in names]
    vocab, inverse = np.unique(np.concatenate(tok), return_inverse=True)
    paths = np.zeros((len(names), len(vocab)))  # tokens of each title's path, with multiplicity
    np.add.at(paths, (np.repeat(np.arange(len(names)), [len(t) for t in tok]), inverse), 1.0)
    out = {}
    for level, t, r in (("title", target_counts, counts), ("token", target_counts @ paths, counts @ paths)):
        out[f"{level}_KL_TR"] = kl_rows(t, r)
        out[f"{level}_KL_RT"] = kl_rows(r, t)
        out[f"{level}_JS"] = js_rows(t, r)
    out["distinct"] = (counts > 0).sum(axis=1).astype(np.float64)
    return out


def divergence_table(
    target: Mapping[str, float],
    samples: Mapping[str, Sequence[str]],
    trie: Trie,
    title_probs: Mapping[str, Mapping[str, float]] | None = None,
    jackknife: tuple[int, int, float] | None = None,
) -> pd.DataFrame:
    """One row per method (in `samples` order): title- and token-level KL(T||R), KL(R||T), JS.

    Token level: every title counts with its full trie path (title, newline, EOS), the ids the model
    generates. Smoothing and log base: flowrec.divergences.distribution_divergences (natural log).
    `title_probs[method]` ({title: P}, flowrec.sampling.title_log_probs) adds `title_JS_exact`: JS
    between T and the model's exact constrained distribution over titles, free of the sampling noise of R.
    `jackknife` (groups, seed, level) adds `{column}_lo`, `{column}_hi` to every sampled column: the
    grouped-jackknife t interval around the column's value over the method's generated titles (at
    least two titles; flowrec.bootstrap.jackknife_interval).
    """
    token_ids = {t: trie.title_token_ids(i) for i, t in enumerate(trie.titles)}
    title_probs = title_probs or {}
    rows = {}
    for method, titles in samples.items():
        unknown = sorted({t for t in titles if t not in token_ids})
        if unknown:
            raise ValueError(
                f"samples of {method!r}: {len(unknown)} titles outside the target set, e.g. {unknown[:3]}"
            )
        div = distribution_divergences(target, list(titles), token_ids)
        exact = title_probs.get(method)
        div["title_JS_exact"] = js_divergence(*aligned_counts(target, exact)) if exact else math.nan
        div["distinct"] = float(len(set(titles)))
        if jackknife is not None and len(titles) >= 2:
            groups, seed, level = jackknife
            weights = leave_group_out_weights(jackknife_labels(len(titles), groups, seed))
            replicates = sampled_draws(target, list(titles), trie, weights)
            for column, v in replicates.items():
                # centred on the table's value (distribution_divergences, equal to sampled_draws under
                # unit weights to 1e-12), so the interval holds the value beside it
                bounds = sampled_bounds(column, len(target), len(titles))
                div[f"{column}_lo"], div[f"{column}_hi"] = jackknife_interval(div[column], v, level, bounds)
        rows[LABELS.get(method, method)] = div
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "Method"
    columns = [f"{lvl}_{m}" for lvl in ("title", "token") for m in ("KL_TR", "KL_RT", "JS")]
    columns = [*columns, "title_JS_exact", "distinct", "generated"]
    with_bounds = [c for col in columns for c in (col, f"{col}_lo", f"{col}_hi") if c in table.columns]
    return table[with_bounds]

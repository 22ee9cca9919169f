"""Generation under the target trie and the divergence table of RQ1 (docs/method.md section 6).

Every model (and the untuned base) samples titles at temperature 1 under the trie of the target titles
from the history-free prompt; the table compares T with the generated distribution R (title- and
token-level KL both ways and JS, flowrec.divergences.distribution_divergences) and, free of sampling
noise, with the model's exact constrained distribution over the titles (flowrec.sampling.title_log_probs).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd
import torch

from flowrec.distfit.methods import LABELS
from flowrec.divergences import aligned_counts, distribution_divergences, js_divergence
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


def divergence_table(
    target: Mapping[str, float],
    samples: Mapping[str, Sequence[str]],
    trie: Trie,
    title_probs: Mapping[str, Mapping[str, float]] | None = None,
) -> pd.DataFrame:
    """One row per method (in `samples` order): title- and token-level KL(T||R), KL(R||T), JS.

    Token level: every title counts with its full trie path (title, newline, EOS), the ids the model
    generates. Smoothing and log base: flowrec.divergences.distribution_divergences (natural log).
    `title_probs[method]` ({title: P}, flowrec.sampling.title_log_probs) adds `title_JS_exact`: JS
    between T and the model's exact constrained distribution over titles, free of the sampling noise of R.
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
        rows[LABELS.get(method, method)] = div
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "Method"
    columns = [f"{lvl}_{m}" for lvl in ("title", "token") for m in ("KL_TR", "KL_RT", "JS")]
    return table[[*columns, "title_JS_exact", "distinct", "generated"]]

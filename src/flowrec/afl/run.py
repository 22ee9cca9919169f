"""AFL's LLM stages as functions on paths (docs/method.md section 9): recommend and simulate.

Every LLM call goes through the content-addressed cache (flowrec.afl.cache), so rows that share prompts
(the "agent" row is AFL's first round) and reruns cost nothing twice. Each output JSON records the
backend's calls, tokens, unparsed answers (and the fallback used for them), cache hits and wall time.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pyarrow as pa

from flowrec.afl.backends import BackendSettings, make_backend
from flowrec.afl.cache import CachedBackend
from flowrec.afl.candidates import choose_rows, simulation_items
from flowrec.afl.data import (
    AflSettings,
    build_cases,
    load_p_ui,
    percentile_rewards,
    read_candidates,
    read_split_and_titles,
)
from flowrec.afl.loop import judge_items, run_loop
from flowrec.afl.metrics import hr_at_1, precision_recall_f1
from flowrec.io import write_json, write_parquet

log = logging.getLogger("flowrec.afl")

# variant -> (uses the recommendation model, uses the reward model, rounds: "max" or 1; None = no LLM)
VARIANTS = {
    "base": (True, False, None),
    "agent": (True, False, 1),
    "afl": (True, True, "max"),
    "afl_norec": (False, True, "max"),
    "afl_noreward": (True, False, "max"),
    "afl_none": (False, False, "max"),
}
FALLBACKS = {
    "Item": "the recommendation model's suggestion (the first candidate without one)",
    "Decision": "no",
}


def _backend(settings: BackendSettings, cache: str, threads: int) -> CachedBackend:
    # One chunk = one local batch, or one round of requests in flight for an endpoint.
    chunk = settings.batch_size if settings.kind == "local" else settings.concurrency
    return CachedBackend(make_backend(settings, threads=threads), cache, chunk=chunk)


def _usage(backend: CachedBackend | None, seconds: float) -> dict:
    out = {"seconds": round(seconds, 2)}
    if backend is not None:
        out.update(
            backend=backend.identity,
            calls=backend.stats.as_dict(),
            cache_hits=backend.hits,
            cache_misses=backend.misses,
            unparsed_fallback=FALLBACKS,
        )
    return out


def recommend(
    variant: str,
    test: str,
    items: str,
    candidates: str,
    rec_p_ui: str,
    reward_p_ui: str,
    out: str,
    metrics: str,
    settings: AflSettings,
    backend_settings: BackendSettings,
    cache: str,
    domain: str,
    threads: int = 1,
) -> dict:
    """HR@1 of one variant's final items; per-user outcomes to `out`, the summary to `metrics`."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown AFL variant {variant!r}; expected one of {sorted(VARIANTS)}")
    use_rec, use_reward, rounds = VARIANTS[variant]
    start = time.perf_counter()
    split, titles = read_split_and_titles(test, items)
    rows, cand, _ = read_candidates(candidates)
    rec = load_p_ui(rec_p_ui, len(split), len(titles)) if use_rec else None
    reward = load_p_ui(reward_p_ui, len(split), len(titles)) if use_reward else None
    cases = build_cases(split, rows, cand, titles, rec, reward)
    backend = None
    if rounds is None:
        finals, n_rounds, accepted = [c.suggestion for c in cases], [0] * len(cases), [False] * len(cases)
    else:
        backend = _backend(backend_settings, cache, threads)
        max_rounds = settings.max_rounds if rounds == "max" else 1
        outcomes = run_loop(cases, backend, domain, max_rounds)
        finals = [o.final for o in outcomes]
        n_rounds, accepted = [o.rounds for o in outcomes], [o.accepted for o in outcomes]
    target = titles[split.target[rows]]
    hit = np.asarray(finals, dtype=object) == target
    write_parquet(
        pa.table(
            {
                "sample": rows,
                "final": finals,
                "target": target.tolist(),
                "hit": hit,
                "rounds": n_rounds,
                "accepted": accepted,
            }
        ),
        out,
    )
    summary = {
        "variant": variant,
        "users": len(rows),
        "HR@1": hr_at_1(np.asarray(finals, dtype=object), target),
        "mean_rounds": float(np.mean(n_rounds)),
        "accepted": float(np.mean(accepted)),
        **_usage(backend, time.perf_counter() - start),
    }
    write_json(summary, metrics)
    log.info(
        "AFL %s: HR@1 %.4f over %d users (%.1f s)", variant, summary["HR@1"], len(rows), summary["seconds"]
    )
    return summary


def best_threshold(scores: np.ndarray, positive: np.ndarray) -> float:
    """The threshold t ("yes" iff score >= t) with the best F1 on (scores, positive); ties: the higher t.

    The candidate thresholds are the distinct scores, with their precision and recall from
    sklearn.metrics.precision_recall_curve; without a positive every F1 is 0 and the highest score wins.
    """
    from sklearn.metrics import precision_recall_curve  # only the AFL stages need sklearn

    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    if not positive.any():
        return float(scores.max())
    # Ascending thresholds; the curve's last point (precision 1, recall 0) has none.
    precision, recall, thresholds = precision_recall_curve(positive, scores, drop_intermediate=False)
    precision, recall = precision[:-1], recall[:-1]
    total = precision + recall
    f1 = np.where(total > 0, 2 * precision * recall / np.maximum(total, 1e-12), 0.0)
    best = np.flatnonzero(f1 == f1.max())[-1]  # the last of the ties is the highest threshold
    return float(thresholds[best])


def simulate(
    variant: str,
    test: str,
    valid: str,
    items: str,
    candidates: str,
    p_ui_test: str,
    p_ui_valid: str,
    metrics: str,
    settings: AflSettings,
    backend_settings: BackendSettings,
    cache: str,
    domain: str,
    threads: int = 1,
) -> dict:
    """Precision/recall/F1 of "yes" at every ratio 1:r (judged columns 0..r; column 0 is the positive)."""
    start = time.perf_counter()
    split, titles = read_split_and_titles(test, items)
    rows, _, judged = read_candidates(candidates)
    reward_test = load_p_ui(p_ui_test, len(split), len(titles))
    labels = np.zeros(judged.shape, dtype=bool)
    labels[:, 0] = True
    backend, thresholds = None, {}
    if variant == "reward_model":
        valid_split, _ = read_split_and_titles(valid, items)
        valid_rows = choose_rows(len(valid_split), settings.valid_users, settings.seed)
        valid_items = simulation_items(
            valid_split, valid_rows, len(titles), judged.shape[1] - 1, settings.seed
        )
        valid_scores = percentile_rewards(
            load_p_ui(p_ui_valid, len(valid_split), len(titles)), valid_rows, valid_items
        )
        scores = percentile_rewards(reward_test, rows, judged)
        valid_labels = np.zeros(valid_items.shape, dtype=bool)
        valid_labels[:, 0] = True
        decisions = {}
        for r in settings.ratios:
            # The threshold of each ratio is chosen on valid pairs at that ratio, then applied to test.
            thresholds[r] = best_threshold(valid_scores[:, : r + 1].ravel(), valid_labels[:, : r + 1].ravel())
            decisions[r] = scores[:, : r + 1] >= thresholds[r]
    elif variant in ("user_agent", "afl"):
        backend = _backend(backend_settings, cache, threads)
        flat_rows = np.repeat(rows, judged.shape[1])
        flat_items = judged.reshape(-1, 1)
        cases = build_cases(split, flat_rows, flat_items, titles, None, reward_test)
        max_rounds = 0 if variant == "user_agent" else settings.max_rounds
        said, _ = judge_items(cases, [c.candidates[0] for c in cases], backend, domain, max_rounds)
        said = np.asarray(said).reshape(judged.shape)
        decisions = {r: said[:, : r + 1] for r in settings.ratios}
    else:
        raise ValueError(f"unknown user-simulation variant {variant!r}")
    results = {
        f"1:{r}": precision_recall_f1(decisions[r].ravel(), labels[:, : r + 1].ravel())
        for r in settings.ratios
    }
    summary = {"variant": variant, "users": len(rows), "ratios": results, "thresholds": thresholds}
    summary.update(_usage(backend, time.perf_counter() - start))
    write_json(summary, metrics)
    log.info("AFL simulation %s: %s (%.1f s)", variant, results, summary["seconds"])
    return summary

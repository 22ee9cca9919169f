"""Distribution divergences of the distribution-fitting experiment (RQ1, docs/method.md section 6).

A target T = {title: count} against the titles a model generates, at the title level and at the token
level (the tokens of each title, weighted by its count). KL is smoothed additively on the union support,
JS needs no smoothing; both use the natural log. Pure functions on plain Python/numpy data.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

# Additive smoothing for KL: this pseudo-count is added to every outcome of the union support of
# the two distributions (outcomes seen in either one), so KL stays finite when one side never
# produced an outcome. JS needs none. All divergences use the natural log (JS <= ln 2 ~ 0.693);
# the paper's JS values 0.047..0.513 fit that scale.
KL_SMOOTHING = 0.5


def title_distribution(titles: Iterable[str] | Mapping[str, float]) -> dict[str, float]:
    """Counts per title: a mapping is read as {title: count}, any other iterable as one draw per title."""
    if isinstance(titles, Mapping):
        return {str(t): float(c) for t, c in titles.items()}
    return {t: float(c) for t, c in Counter(titles).items()}


def token_distribution(
    title_counts: Mapping[str, float], title_token_ids: Mapping[str, Sequence[int]]
) -> dict[int, float]:
    """Counts per token id: every token of a title counts with that title's count.

    `title_token_ids` holds the ids of each title as the caller tokenizes it (the caller decides
    whether termination tokens belong to a title; they add the same mass to both sides).
    """
    missing = [t for t in title_counts if t not in title_token_ids]
    if missing:
        raise KeyError(f"token ids missing for {len(missing)} titles, e.g. {missing[:3]}")
    ids = [np.asarray(title_token_ids[t], dtype=np.int64) for t in title_counts]
    weights = np.repeat(np.fromiter(title_counts.values(), np.float64), [len(i) for i in ids])
    flat = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    tokens, inverse = np.unique(flat, return_inverse=True)
    counts = np.bincount(inverse, weights=weights, minlength=len(tokens))
    return {int(t): float(c) for t, c in zip(tokens, counts, strict=True)}


def aligned_counts(p: Mapping, q: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """Two count vectors over the sorted union of both supports (missing outcomes count 0)."""
    support = sorted(set(p) | set(q))
    return (
        np.array([p.get(x, 0.0) for x in support], np.float64),
        np.array([q.get(x, 0.0) for x in support], np.float64),
    )


def _check_counts(p: np.ndarray, q: np.ndarray) -> None:
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"count vectors must be 1-d and aligned, got shapes {p.shape} and {q.shape}")
    if (p < 0).any() or (q < 0).any() or p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("counts must be non-negative with a positive total")


def kl_divergence(p_counts: np.ndarray, q_counts: np.ndarray, smoothing: float = KL_SMOOTHING) -> float:
    """KL(P || Q) = sum_x P(x) ln(P(x) / Q(x)), natural log.

    P and Q are count vectors over one support; `smoothing` is added to every entry of both before
    normalising (the support should be the union of outcomes seen in either, see aligned_counts).
    """
    p_counts, q_counts = np.asarray(p_counts, np.float64), np.asarray(q_counts, np.float64)
    _check_counts(p_counts, q_counts)
    p = (p_counts + smoothing) / (p_counts + smoothing).sum()
    q = (q_counts + smoothing) / (q_counts + smoothing).sum()
    if (q[p > 0] == 0).any():
        return float("inf")  # only reachable with smoothing 0
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / q[nz])).sum())


def js_divergence(p_counts: np.ndarray, q_counts: np.ndarray) -> float:
    """Jensen-Shannon divergence, natural log: (KL(P||M) + KL(Q||M)) / 2 with M = (P + Q) / 2; unsmoothed."""
    p_counts, q_counts = np.asarray(p_counts, np.float64), np.asarray(q_counts, np.float64)
    _check_counts(p_counts, q_counts)
    p, q = p_counts / p_counts.sum(), q_counts / q_counts.sum()
    m = (p + q) / 2

    def _kl_to_m(x: np.ndarray) -> float:
        nz = x > 0  # 0 * ln 0 = 0; m > 0 wherever x > 0
        return float((x[nz] * np.log(x[nz] / m[nz])).sum())

    return (_kl_to_m(p) + _kl_to_m(q)) / 2


def distribution_divergences(
    target_counts: Mapping[str, float],
    generated_titles: Sequence[str],
    title_token_ids: Mapping[str, Sequence[int]],
    smoothing: float = KL_SMOOTHING,
) -> dict[str, float]:
    """Title- and token-level divergences between a target T = {title: count} and generated titles R.

    Keys: title_KL_TR = KL(T||R), title_KL_RT = KL(R||T), title_JS, and the same with token_ over
    the token-id distributions; natural log; KL with additive smoothing `smoothing` on the union
    support; plus `generated` (number of titles) and `in_target` (share of generated titles in T).
    """
    target = title_distribution(target_counts)
    generated = title_distribution(generated_titles)
    out: dict[str, float] = {}
    for level, t, r in (
        ("title", target, generated),
        (
            "token",
            token_distribution(target, title_token_ids),
            token_distribution(generated, title_token_ids),
        ),
    ):
        tv, rv = aligned_counts(t, r)
        out[f"{level}_KL_TR"] = kl_divergence(tv, rv, smoothing)
        out[f"{level}_KL_RT"] = kl_divergence(rv, tv, smoothing)
        out[f"{level}_JS"] = js_divergence(tv, rv)
    out["generated"] = float(len(generated_titles))
    out["in_target"] = float(np.mean([t in target for t in generated_titles])) if generated_titles else 0.0
    return out


def kl_rows(p_counts: np.ndarray, q_counts: np.ndarray, smoothing: float = KL_SMOOTHING) -> np.ndarray:
    """kl_divergence for every row of (rows, S) count matrices over one support (an interval's weight rows);
    a 1-d side is shared by every row. Same smoothing and log as kl_divergence."""
    p = np.asarray(p_counts, np.float64) + smoothing
    q = np.asarray(q_counts, np.float64) + smoothing
    p, q = np.broadcast_arrays(p / p.sum(axis=-1, keepdims=True), q / q.sum(axis=-1, keepdims=True))
    ratio = np.divide(p, q, out=np.ones_like(p), where=p > 0)
    return np.where(p > 0, p * np.log(ratio), 0.0).sum(axis=-1)


def js_rows(p_counts: np.ndarray, q_counts: np.ndarray) -> np.ndarray:
    """js_divergence for every row of (rows, S) count matrices over one support (1-d sides broadcast)."""
    p = np.asarray(p_counts, np.float64)
    q = np.asarray(q_counts, np.float64)
    p, q = np.broadcast_arrays(p / p.sum(axis=-1, keepdims=True), q / q.sum(axis=-1, keepdims=True))
    m = (p + q) / 2

    def _kl_to_m(x: np.ndarray) -> np.ndarray:
        ratio = np.divide(x, m, out=np.ones_like(x), where=x > 0)
        return np.where(x > 0, x * np.log(ratio), 0.0).sum(axis=-1)

    return (_kl_to_m(p) + _kl_to_m(q)) / 2

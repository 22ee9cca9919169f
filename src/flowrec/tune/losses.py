"""Fine-tuning losses as pure tensor functions (docs/method.md sections 4-5).

Shapes: B samples, T tokens of the title (termination included), V vocabulary, K states.
Every loss returns one value per sample; the training loop sums them over a global batch and divides
by its size, so that gradient accumulation and data-parallel ranks give exactly the one-batch loss.
"""

import numpy as np
import torch

REWARD_VARIANTS = ("plain", "div", "add", "add_published")
# How each reward variant wants the SASRec row normalised before p_ui reaches process_log_rewards
# (flowrec.tune.data.P_UI_NORMALISATIONS): docs/method.md section 4 for plain, div and add; the
# published `add` code min-max normalises instead (../shared/design/experiments.md section 6).
REWARD_P_UI_NORMALISATION = {"plain": "mean", "div": "mean", "add": "mean", "add_published": "minmax"}
# The published add reward's guard against log 0 at the row's minimum (its min-max p_ui is 0 there).
ADD_PUBLISHED_EPS = 1e-20


NORMALISATIONS = ("children", "vocab")


def token_log_probs(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    temperature: float = 1.0,
    allowed: torch.Tensor | None = None,
) -> torch.Tensor:
    """log pi(y_t | x, y_<t) of the given tokens: (B, T, V) logits and (B, T) ids -> (B, T).

    Computed as logit - logsumexp(logits) so that the (B, T, V) log-softmax is never materialised.
    allowed (B, T, V) bool: renormalise over these tokens only (a trie state's children, docs/method.md
    section 4), so that mass on other tokens does not change the value; None: the whole vocabulary.
    """
    logits = logits.float() / temperature if temperature != 1.0 else logits.float()
    picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (B, T)
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    return picked - torch.logsumexp(logits, dim=-1)


def sft_loss(
    token_logp: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-sample cross-entropy on the target tokens only (BIGRec; IFairLRS with `weights`).

    token_logp (B, T): log-probabilities of the target tokens; mask (B, T): 1 on target tokens, 0 on
    padding (the prompt never enters: its positions are not part of `token_logp`). Each sample's loss is
    its mean token negative log-likelihood, times its weight. Returns (B,).
    """
    mask = mask.to(token_logp.dtype)
    per_sample = -(token_logp * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)  # (B,)
    return per_sample if weights is None else per_sample * weights.to(per_sample.dtype)


def ifairlrs_weights(target_groups: np.ndarray, history_shares: np.ndarray, n_groups: int) -> np.ndarray:
    """IFairLRS sample weights (docs/method.md section 5): for a sample whose target is in group g,
    (share of g among training-history interactions) / (share of g among training targets).

    target_groups (n,): popularity group of each training target; history_shares (G,): groups.json shares.
    """
    target_groups = np.asarray(target_groups, dtype=np.int64)
    if target_groups.size and (target_groups.min() < 0 or target_groups.max() >= n_groups):
        raise ValueError(
            f"ifairlrs_weights: groups must lie in [0, {n_groups}), got {target_groups.min()}..{target_groups.max()}"
        )
    target_share = np.bincount(target_groups, minlength=n_groups) / max(len(target_groups), 1)  # (G,)
    history_shares = np.asarray(history_shares, dtype=np.float64)
    if history_shares.shape != (n_groups,):
        raise ValueError(
            f"ifairlrs_weights: expected {n_groups} history shares, got shape {history_shares.shape}"
        )
    # Every group indexed below holds at least one target, so its target share is positive.
    return (history_shares[target_groups] / target_share[target_groups]).astype(np.float32)


def normalise_p_ui(p: torch.Tensor) -> torch.Tensor:
    """Per-row SASRec score normalisation of docs/method.md section 4: (p - mean) / (max - min) + 1.

    p (N, n_items) -> (N, n_items), values in (0, 2); a constant row maps to 1.
    """
    p = p.float()
    span = (p.amax(-1, keepdim=True) - p.amin(-1, keepdim=True)).clamp_min(1e-12)
    return (p - p.mean(-1, keepdim=True)) / span + 1.0


def minmax_p_ui(p: torch.Tensor) -> torch.Tensor:
    """Per-row min-max normalisation of SASRec scores, (p - min) / (max - min), in [0, 1] (PPO's reward,
    docs/method.md section 10); a constant row maps to 0. p (N, n_items) -> (N, n_items)."""
    p = p.float()
    low = p.amin(-1, keepdim=True)
    return (p - low) / (p.amax(-1, keepdim=True) - low).clamp_min(1e-12)


def process_log_rewards(
    edge_log_reward: torch.Tensor, p_ui: torch.Tensor | None, variant: str
) -> torch.Tensor:
    """Per-token log process reward of docs/method.md section 4, (B, T) -> (B, T).

    edge_log_reward: log R_p(s_t, y_{t+1}) = log F(s_{t+1}) - log F(s_t) along the sampled title (0 on
    padding); p_ui (B,): the normalised SASRec score of the sampled item for that sample's history,
    normalised as REWARD_P_UI_NORMALISATION[variant] says.
    plain: log R_p;  div: log R_p / p_ui (p_ui mean-normalised, in (0, 2));
    add: log(p_ui * R_p) = log p_ui + log R_p (p_ui mean-normalised);
    add_published: log R_p + log(p_ui + 1e-20) with p_ui min-max normalised to [0, 1], the published
    code's add (its S_lamda 1). Every variant acts on every edge of the title, the termination edge
    included, so a title of c tokens and its termination gets (c + 1) log p_ui from the add variants and
    log R(i) / p_ui from div (the published div divides the same edges, docs/method.md section 4).
    """
    if variant == "plain":
        return edge_log_reward
    if p_ui is None:
        raise ValueError(f"reward variant {variant!r} needs p_ui scores")
    p_ui = p_ui.to(edge_log_reward.dtype).unsqueeze(-1)  # (B, 1)
    if variant == "div":
        return edge_log_reward / p_ui
    if variant == "add":
        return edge_log_reward + torch.log(p_ui)
    if variant == "add_published":
        return edge_log_reward + torch.log(p_ui + ADD_PUBLISHED_EPS)
    raise ValueError(f"unknown reward variant {variant!r}; expected one of {REWARD_VARIANTS}")


def subtb_loss(
    log_pi: torch.Tensor,
    log_reward: torch.Tensor,
    mask: torch.Tensor,
    granularity: int = 1,
    decay: float = 1.0,
) -> torch.Tensor:
    """Subtrajectory balance of docs/method.md section 4 (Flower, Gao et al. 2025, eq. of L_SubTB), (B,).

    log_pi (B, T): log pi(y_{t+1} | x, y_<=t) of the sampled title; log_reward (B, T): per-token log
    process reward (its sum over a segment is log F(s_n) - log F(s_m)); mask (B, T): 1 on the title's
    tokens. States sit every `granularity` tokens from the prompt (state 0) plus the title's end. For
    every pair of states m < n the residual is
        sum_{t=m}^{n-1} log pi  -  sum_{t=m}^{n-1} log R_p,
    and the loss is the mean of the squared residuals over all pairs, equally weighted by default;
    `decay` lambda weighs a pair lambda^(n - m - 1) (n - m in tokens; the weighted mean), the segment-length
    decay of the published RQ1 code (its `subtb_lambda`; 1 there too, and here the paper's equal weights).
    """
    if granularity < 1:
        raise ValueError(f"granularity must be >= 1, got {granularity}")
    if not decay > 0:
        raise ValueError(f"SubTB decay must be positive, got {decay}")
    mask_f = mask.to(log_pi.dtype)
    diff = (log_pi - log_reward) * mask_f  # (B, T)
    zero = diff.new_zeros(diff.shape[0], 1)
    cum = torch.cat([zero, diff.cumsum(-1)], dim=-1)  # (B, T+1): D at every token boundary
    length = mask.long().sum(-1)  # (B,)
    boundary = torch.arange(cum.shape[1], device=cum.device)  # (T+1,)
    # A boundary is a state when it is a multiple of the granularity or the title's end.
    is_state = ((boundary % granularity) == 0).unsqueeze(0) & (boundary.unsqueeze(0) <= length.unsqueeze(1))
    is_state = is_state | (boundary.unsqueeze(0) == length.unsqueeze(1))  # (B, T+1)
    residual = cum.unsqueeze(1) - cum.unsqueeze(2)  # (B, T+1, T+1): D[n] - D[m] at [m, n]
    pair = is_state.unsqueeze(2) & is_state.unsqueeze(1)
    pair = pair & torch.ones_like(pair[0]).triu(1).unsqueeze(0)  # m < n
    pair_f = pair.to(residual.dtype)
    if decay != 1.0:
        span = (boundary.unsqueeze(0) - boundary.unsqueeze(1)).clamp_min(1) - 1  # (T+1, T+1): n - m - 1
        pair_f = pair_f * decay ** span.to(residual.dtype)
    weight = pair_f.sum((-1, -2))
    return (residual.square() * pair_f).sum((-1, -2)) / torch.where(weight > 0, weight, 1.0)

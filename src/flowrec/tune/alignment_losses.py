"""Preference-alignment losses of the paper's RQ3 as pure tensor functions (docs/method.md section 10).

Shapes: B prompts, K rejected titles per prompt, T response tokens. r_y = log pi(y|x) - log pi_ref(y|x),
each summed over the response's tokens, is the implicit reward of DPO; every loss returns one value per
prompt (B,), like the other losses of the loop (flowrec.tune.losses).
"""

import torch
import torch.nn.functional as F

DMPO_REDUCTIONS = ("sum", "mean")


def dpo_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO (Rafailov et al. 2023, eq. 7), sigmoid form: -log sigmoid(beta (r_c - r_rej)).

    r_chosen (B,), r_rejected (B,) or (B, 1) -> (B,). RosePO's published loss (one rejected title).
    """
    return -F.logsigmoid(beta * (r_chosen - r_rejected.reshape(r_chosen.shape)))


def sdpo_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, beta: float) -> torch.Tensor:
    """S-DPO (Chen et al. 2024, softmax DPO): -log sigmoid(-log sum_k exp(beta (r_k - r_c))).

    r_chosen (B,), r_rejected (B, K) -> (B,). With K = 1 it is DPO: -log sigmoid(beta (r_c - r_1)).
    """
    margins = beta * (r_rejected - r_chosen.unsqueeze(-1))  # (B, K)
    return -F.logsigmoid(-torch.logsumexp(margins, dim=-1))


def dmpo_loss(
    r_chosen: torch.Tensor, r_rejected: torch.Tensor, beta: float, reduce: str = "sum"
) -> torch.Tensor:
    """DMPO: -log sigmoid(beta * reduce_k (r_c - r_k)), r_chosen (B,), r_rejected (B, K) -> (B,).

    `reduce` sum is the published code's (with_history/dpo/trainer/dmpo_trainer.py); mean averages the
    K margins, i.e. the sum with beta / K.
    """
    if reduce not in DMPO_REDUCTIONS:
        raise ValueError(f"align.dmpo_reduce: {reduce!r}; expected one of {DMPO_REDUCTIONS}")
    margins = r_chosen.unsqueeze(-1) - r_rejected  # (B, K)
    margin = margins.sum(-1) if reduce == "sum" else margins.mean(-1)
    return -F.logsigmoid(beta * margin)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp_min(1.0)
    return (values * mask).sum(dim) / mask.sum(dim).clamp_min(1.0)


def whiten(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(values - mean) / std over the masked entries (unbiased variance, as trl's masked_whiten)."""
    mean = masked_mean(values, mask)
    n = mask.to(values.dtype).sum()
    var = (((values - mean) * mask) ** 2).sum() / (n - 1).clamp_min(1.0)
    return (values - mean) * torch.rsqrt(var + 1e-8)


def ppo_token_rewards(
    logp: torch.Tensor, ref_logp: torch.Tensor, score: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """Per-token rewards of a rollout (B, T): -kl_coef * |log pi - log pi_ref| on every response token
    (trl's "abs" KL penalty) plus the sequence's score (B,) on its last token."""
    mask_f = mask.to(logp.dtype)
    rewards = -kl_coef * (logp - ref_logp).abs() * mask_f
    last = (mask.long().sum(-1) - 1).clamp_min(0)  # (B,)
    return rewards.scatter_add(1, last.unsqueeze(1), score.to(rewards.dtype).unsqueeze(1))


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over right-padded responses.

    rewards, values, mask (B, T) -> (advantages (B, T), returns (B, T)); the value after the last
    token is 0 (the episode ends with the title). A loop over T (a title's tokens, tens), vectorised
    over the batch.
    """
    mask_f = mask.to(values.dtype)
    values = values * mask_f
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in range(values.shape[1] - 1, -1, -1):
        next_value = values[:, t + 1] if t + 1 < values.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask_f[:, t]
        advantages[:, t] = running
    return advantages, advantages + values


def ppo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip: float,
    vf_coef: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate (Schulman et al. 2017, eq. 7) and clipped value loss, per sample (B,).

    policy: mean_t max(-A ratio, -A clip(ratio, 1 - clip, 1 + clip)), ratio = exp(logp - old_logp);
    value: 0.5 mean_t max((v - R)^2, (clip(v, v_old - clip, v_old + clip) - R)^2), weighted vf_coef.
    Returns (policy loss (B,), weighted value loss (B,)); their sum is the PPO loss.
    """
    ratio = torch.exp(logp - old_logp)
    policy = torch.maximum(-advantages * ratio, -advantages * ratio.clamp(1.0 - clip, 1.0 + clip))
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    value = 0.5 * torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    return masked_mean(policy, mask, dim=-1), vf_coef * masked_mean(value, mask, dim=-1)

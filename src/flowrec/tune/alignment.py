"""The preference-alignment objectives of RQ3 as loss objects of the training loop (docs/method.md section 10).

An aligned job trains a policy that starts as a tuned model (BIGRec or Flower) against a frozen
reference, a second copy of that model (flowrec.tune.run). Both objects below follow the loop's loss
protocol (flowrec.tune.objectives.TuneLoss): per-sample totals and parts, and a fingerprint.

PreferenceLoss  S-DPO, DMPO and RosePO's DPO on the chosen (target) title against the batch's rejected
                titles: one forward of the 1 + K responses on their prompts with the policy, one
                without gradients with the reference.
PPOLoss         one rollout per prompt from the policy under the trie, rewarded by the min-max
                normalised SASRec score of the sampled title, a per-token |KL| penalty to the
                reference, GAE over a value head on the policy's last hidden state, PPO's clipped
                surrogate and value losses.
"""

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from flowrec.lm import encode_prompt_states, position_ids
from flowrec.sampling import sample_continuations
from flowrec.trie import Trie
from flowrec.tune.alignment_losses import (
    dmpo_loss,
    dpo_loss,
    gae,
    masked_mean,
    ppo_loss,
    ppo_token_rewards,
    sdpo_loss,
    whiten,
)
from flowrec.tune.data import Batch
from flowrec.tune.forward import head_log_probs

PREFERENCE_FORMS = ("sdpo", "dmpo", "dpo")


def response_states(
    model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, response: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Decoder states (B, T, H) that predict each response token, from one forward of [prompt ; response]."""
    ids = torch.cat([prompt_ids, response], dim=1)
    full = torch.cat([prompt_mask, mask], dim=1)
    out = model.get_decoder()(input_ids=ids, attention_mask=full, position_ids=position_ids(full))
    prompt_len = prompt_ids.shape[1]
    return out.last_hidden_state[:, prompt_len - 1 : prompt_len - 1 + response.shape[1]]


def response_log_probs(
    model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, response: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """log pi(y_t | x, y_<t) over the vocabulary of each response token (B, T), 0 on padding."""
    hidden = response_states(model, prompt_ids, prompt_mask, response, mask)
    return head_log_probs(model, hidden, response, mask)


def _chosen_and_rejected(batch: Batch, pad_id: int) -> tuple[torch.Tensor, ...]:
    """[chosen ; rejected] responses (B (1 + K), T) and masks, on their prompts (the chosen rows first,
    then each sample's K rejected rows), and K."""
    if batch.rejected_ids is None:
        raise ValueError("preference loss: the batch has no rejected titles (TuneData.rejected_titles)")
    k = len(batch.rejected_ids) // len(batch.target_ids)
    width = max(batch.target_ids.shape[1], batch.rejected_ids.shape[1])

    def widen(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        extra = width - ids.shape[1]
        return F.pad(ids, (0, extra), value=pad_id), F.pad(mask, (0, extra), value=0)

    chosen, chosen_mask = widen(batch.target_ids, batch.target_mask)
    rejected, rejected_mask = widen(batch.rejected_ids, batch.rejected_mask)
    prompts = torch.cat([batch.prompt_ids, batch.prompt_ids.repeat_interleave(k, 0)])
    prompt_mask = torch.cat([batch.prompt_mask, batch.prompt_mask.repeat_interleave(k, 0)])
    return prompts, prompt_mask, torch.cat([chosen, rejected]), torch.cat([chosen_mask, rejected_mask]), k


@dataclass
class PreferenceLoss:
    """S-DPO, DMPO or DPO (RosePO) against a frozen reference; rejected titles come with the batch.

    `form` picks the loss (flowrec.tune.alignment_losses), `beta` its temperature, `dmpo_reduce` DMPO's
    sum or mean of margins; `sampler`, `negatives` and `seed` say how the rejected titles were drawn
    (flowrec.tune.preferences; run_job draws them), and enter the fingerprint.
    """

    form: str
    beta: float
    sampler: str
    negatives: int
    seed: int
    reference: Any = field(repr=False)
    dmpo_reduce: str = "sum"

    parts = ("preference", "margin")
    uses_p_ui = False
    p_ui_normalisation = "mean"

    def __post_init__(self) -> None:
        if self.form not in PREFERENCE_FORMS:
            raise ValueError(f"preference loss form {self.form!r}; expected one of {PREFERENCE_FORMS}")

    def __call__(self, model, batch: Batch, pad_id: int, generator: torch.Generator):
        prompts, prompt_mask, responses, masks, k = _chosen_and_rejected(batch, pad_id)
        logp = response_log_probs(model, prompts, prompt_mask, responses, masks).sum(-1)  # (B (1 + K),)
        with torch.no_grad():
            ref = response_log_probs(self.reference, prompts, prompt_mask, responses, masks).sum(-1)
        reward = logp - ref  # r_y = log pi - log pi_ref (DPO's implicit reward)
        n = len(batch.target_ids)
        chosen, rejected = reward[:n], reward[n:].view(n, k)  # (B,), (B, K)
        if self.form == "sdpo":
            loss = sdpo_loss(chosen, rejected, self.beta)
        elif self.form == "dmpo":
            loss = dmpo_loss(chosen, rejected, self.beta, self.dmpo_reduce)
        else:
            loss = dpo_loss(chosen, rejected[:, 0], self.beta)
        loss = loss * batch.weights
        return loss, {"preference": loss, "margin": (chosen.unsqueeze(1) - rejected).mean(1).detach()}

    def fingerprint(self) -> dict[str, Any]:
        return {
            "loss": self.form,
            "beta": self.beta,
            "sampler": self.sampler,
            "negatives": self.negatives,
            "seed": self.seed,
            "dmpo_reduce": self.dmpo_reduce,
        }


class ValueHead(torch.nn.Module):
    """PPO's value head on the policy's last hidden state: dropout, then Linear(hidden -> 1) (trl's)."""

    def __init__(self, hidden: int, dropout: float = 0.1, seed: int = 0):
        super().__init__()
        self.dropout = torch.nn.Dropout(dropout)
        self.summary = torch.nn.Linear(hidden, 1)
        generator = torch.Generator().manual_seed(seed)  # the same head for the same seed, on any device
        with torch.no_grad():
            bound = hidden**-0.5
            self.summary.weight.uniform_(-bound, bound, generator=generator)
            self.summary.bias.zero_()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(self.dropout(hidden.to(self.summary.weight.dtype))).squeeze(-1)


# The policy model holds the value head under this name while it trains (so the optimizer, the
# gradient all-reduce and the checkpoints take it along); run_job removes it before saving the model.
VALUE_HEAD = "flowrec_value_head"


@dataclass
class PPOLoss:
    """PPO with the SASRec reward (docs/method.md section 10): one rollout per prompt, one update."""

    trie: Trie
    reference: Any = field(repr=False)
    kl_coef: float = 0.9
    clip: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    whiten: bool = True
    sample_temperature: float = 1.0
    seed: int = 42

    parts = ("policy", "value", "score", "kl")
    uses_p_ui = True
    p_ui_normalisation = "minmax"

    def attach(self, model) -> None:
        """Give the policy its value head (before the optimizer is built)."""
        if not hasattr(model, VALUE_HEAD):
            device = next(model.parameters()).device
            model.add_module(VALUE_HEAD, ValueHead(model.config.hidden_size, seed=self.seed).to(device))

    def scores(self, batch: Batch, titles: torch.Tensor) -> torch.Tensor:
        """The sequence reward (B,): the sampled title's min-max normalised SASRec score for the sample's
        history when the title occurs in the training histories, else 0; then 0 -> 1e-20 (published)."""
        rows = torch.arange(len(titles), device=batch.p_ui.device)
        score = batch.p_ui[rows, titles.to(batch.p_ui.device)].float()
        seen = torch.as_tensor(self.trie.title_reward > 0, device=score.device)[titles.to(score.device)]
        score = torch.where(seen, score, 0.0)
        return torch.where(score == 0, 1e-20, score)

    def __call__(self, model, batch: Batch, pad_id: int, generator: torch.Generator):
        if batch.p_ui is None:
            raise ValueError("PPO: the batch has no SASRec scores (p_ui_train)")
        with torch.no_grad():  # the rollout: one title per prompt, constrained to the trie
            cache, after = encode_prompt_states(model, batch.prompt_ids, batch.prompt_mask)
            sampled = sample_continuations(
                model,
                self.trie,
                cache,
                batch.prompt_mask,
                after,
                pad_id,
                temperature=self.sample_temperature,
                require_flow=False,
                generator=generator,
            )
        tokens, mask = sampled.tokens, sampled.mask.long()  # (B, T)
        hidden = response_states(model, batch.prompt_ids, batch.prompt_mask, tokens, mask)
        logp = head_log_probs(model, hidden, tokens, mask)  # (B, T)
        values = getattr(model, VALUE_HEAD)(hidden) * mask  # (B, T)
        with torch.no_grad():
            ref = response_log_probs(self.reference, batch.prompt_ids, batch.prompt_mask, tokens, mask)
            score = self.scores(batch, sampled.title_ids)
            old_logp, old_values = logp.detach(), values.detach()
            rewards = ppo_token_rewards(old_logp, ref, score, mask, self.kl_coef)
            advantages, returns = gae(rewards, old_values, mask, self.gamma, self.lam)
            if self.whiten:
                advantages = whiten(advantages, mask) * mask
        policy, value = ppo_loss(
            logp, old_logp, advantages, values, old_values, returns, mask, self.clip, self.vf_coef
        )
        kl = masked_mean((old_logp - ref).abs(), mask, dim=-1)
        total = (policy + value) * batch.weights
        return total, {"policy": policy, "value": value, "score": score.to(total.dtype), "kl": kl}

    def fingerprint(self) -> dict[str, Any]:
        return {
            "loss": "ppo",
            "kl_coef": self.kl_coef,
            "clip": self.clip,
            "vf_coef": self.vf_coef,
            "gamma": self.gamma,
            "lam": self.lam,
            "whiten": self.whiten,
            "sample_temperature": self.sample_temperature,
            "seed": self.seed,
        }

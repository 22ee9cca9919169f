"""The published RQ1 recipe as a loss for flowrec.tune.loop (the `flower_published` distfit row).

The published RQ1 code (docs/method.md sections 6 and 8) differs from the paper's text: SubTB alone (no
SFT term; its `subtb_lambda` is a segment-length decay), log pi over the whole vocabulary, replay of
target titles while the replay loss is above a threshold, then samples from the unconstrained policy,
with a reward of e^-15 for a sequence that leaves the trie. One call of the loss, per micro batch:

- replay phase: SubTB on the batch's target titles (the tuning set: titles drawn from T in proportion
  to the counts), one forward of [prompt ; title] on the prompt cache;
- exploration phase (once a replay loss fell under `replay_threshold`; it never goes back): one
  sequence per prompt from the policy over the vocabulary (flowrec.distfit.explore), then one forward of
  [target titles ; samples] as 2B rows on the prompt cache; SubTB on the samples is the loss, and the
  targets' SubTB is still measured (the `replay` part, not trained).

Parts (log columns): `subtb` (the term trained), `replay` (SubTB on the target titles) and `sft` (their
cross-entropy, measured only: it keeps log.csv comparable with the other rows and feeds the loop's
collapse checks). The switch is taken on the mean replay loss of a micro batch (summed over
torch.distributed ranks, so that every rank switches at the same call). The phase lives in the loss
object, not in the loop's checkpoint: a distfit run checkpoints to a temporary folder and never resumes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from flowrec.distfit.explore import sample_unconstrained
from flowrec.distributed import world
from flowrec.lm import copy_cache, encode_prompts, pad_to
from flowrec.trie import Trie
from flowrec.tune.data import Batch
from flowrec.tune.forward import continuation_states, head_log_probs
from flowrec.tune.losses import sft_loss, subtb_loss, token_log_probs

log = logging.getLogger(__name__)


def continuation_log_probs(
    model,
    cache,
    first_logits: torch.Tensor,
    prompt_mask: torch.Tensor,
    tokens: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """log pi over the vocabulary (N, L) of continuations `tokens` (N, L) of N = k * B rows on top of the
    prompt cache of B prompts (repeated k times), with gradients into the prompt encoding; 0 off `mask`."""
    repeat = tokens.shape[0] // prompt_mask.shape[0]
    first = token_log_probs(first_logits.repeat(repeat, 1).unsqueeze(1), tokens[:, :1])  # (N, 1)
    hidden = continuation_states(model, cache, prompt_mask, tokens, mask)
    if hidden is None:
        return first * mask
    rest = head_log_probs(model, hidden, tokens[:, 1:], mask[:, 1:])
    return torch.cat([first * mask[:, :1], rest], dim=1)


def states_before(trie: Trie, tokens: torch.Tensor) -> torch.Tensor:
    """(B, T) trie node each token of the titles `tokens` (B, T) leaves: the root, then the path's nodes."""
    root = torch.zeros(tokens.shape[0], 1, dtype=torch.long, device=tokens.device)
    return torch.cat([root, trie.path_nodes(tokens)[:, :-1]], dim=1)


def target_log_rewards(trie: Trie, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token log R_p (B, T) of target titles on the trie (0 on padding)."""
    edge = trie.edge_log_reward_of(states_before(trie, tokens).clamp_min(0), tokens)
    return torch.where(mask.bool(), edge, 0.0)


@dataclass
class PublishedRQ1Loss:
    """SubTB alone with replay, then unconstrained exploration (see the module docstring)."""

    trie: Trie
    subtb_decay: float  # lambda^(n - m - 1) weight of a segment of n - m tokens (the published 1.0)
    replay_threshold: float  # replay until the mean replay SubTB of a micro batch falls under this
    off_trie_log_reward: float  # log reward, relative to the root flow, of a sequence that leaves the trie

    parts = ("sft", "subtb", "replay")
    uses_p_ui = False  # history-free: no SASRec scores
    replaying: bool = field(default=True, init=False)  # the phase; False for good once under the threshold
    calls: int = field(default=0, init=False)  # micro batches seen
    switched_at: int | None = field(default=None, init=False)  # the call after which exploration began

    def __post_init__(self) -> None:
        if not self.subtb_decay > 0:
            raise ValueError(f"distfit.published_subtb_decay: {self.subtb_decay}; expected a positive number")

    def _replay_mean(self, replay: torch.Tensor) -> float:
        count = torch.tensor(float(len(replay)), dtype=torch.float64, device=replay.device)
        total = torch.stack([replay.detach().double().sum(), count])
        if world()[1] > 1:
            dist.all_reduce(total)
        return float(total[0] / total[1])

    def __call__(
        self, model, batch: Batch, pad_id: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        size = batch.prompt_ids.shape[0]
        cache, first_logits = encode_prompts(model, batch.prompt_ids, batch.prompt_mask)
        target, target_mask = batch.target_ids, batch.target_mask
        if self.replaying:
            logp = continuation_log_probs(model, cache, first_logits, batch.prompt_mask, target, target_mask)
            target_logp = logp
        else:
            explored = sample_unconstrained(
                model,
                self.trie,
                copy_cache(cache, detach=True),
                batch.prompt_mask,
                first_logits.detach(),
                pad_id,
                self.off_trie_log_reward,
                generator,
            )
            length = max(target.shape[1], explored.tokens.shape[1])
            target, target_mask = pad_to(target, length, pad_id), pad_to(target_mask, length, 0)
            sample = pad_to(explored.tokens, length, pad_id)
            sample_mask = pad_to(explored.mask.long(), length, 0)
            both = continuation_log_probs(
                model,
                cache,
                first_logits,
                batch.prompt_mask,
                torch.cat([target, sample]),
                torch.cat([target_mask, sample_mask]),
            )
            target_logp, logp = both[:size], both[size:]
            sample_reward = pad_to(explored.edge_log_reward, length, 0.0).to(logp.dtype)
        target_reward = target_log_rewards(self.trie, target, target_mask).to(target_logp.dtype)
        replay = subtb_loss(target_logp, target_reward, target_mask, decay=self.subtb_decay)
        sft = sft_loss(target_logp, target_mask, batch.weights).detach()
        if self.replaying:
            subtb = replay
        else:
            subtb = subtb_loss(logp, sample_reward, sample_mask, decay=self.subtb_decay)
            replay = replay.detach()
        self.calls += 1
        if self.replaying:
            mean = self._replay_mean(replay)
            if mean < self.replay_threshold:
                self.replaying, self.switched_at = False, self.calls
                log.info(
                    "flower_published: replay loss %.4g under the threshold %.4g after %d micro batches: "
                    "exploration from now on",
                    mean,
                    self.replay_threshold,
                    self.calls,
                )
        return subtb, {"sft": sft, "subtb": subtb, "replay": replay}

    def fingerprint(self) -> dict[str, Any]:
        return {
            "loss": "flower_published",
            "subtb_decay": self.subtb_decay,
            "replay_threshold": self.replay_threshold,
            "off_trie_log_reward": self.off_trie_log_reward,
        }

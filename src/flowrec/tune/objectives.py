"""A tuning method's loss as one object, looked up by method name (docs/method.md sections 4-5).

The training loop (flowrec.tune.loop) calls a loss once per micro batch,

    total, parts = loss(model, batch, pad_id, generator)   # total (B,), parts {name: (B,)}

and knows nothing else of the method: it logs each of `loss.parts` as the log column `<part>_loss`
and stores `loss.fingerprint()` in the checkpoint, so that a run resumes only with the same loss.
A method's loss is its registry entry's `loss` (flowrec.methods), a key of LOSSES. IFairLRS is SFT on
group-weighted samples: its weights are in the batch, so it shares SFTLoss. The RQ3 losses
(flowrec.tune.alignment) also hold the frozen reference model of their job.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from flowrec import methods
from flowrec.settings import settings_from_block
from flowrec.trie import Trie
from flowrec.tune.alignment import PPOLoss, PreferenceLoss
from flowrec.tune.data import Batch
from flowrec.tune.forward import flower_losses, sft_losses
from flowrec.tune.losses import NORMALISATIONS, REWARD_P_UI_NORMALISATION


class TuneLoss(Protocol):
    """What the training loop needs of a loss."""

    parts: tuple[str, ...]  # names of the per-sample terms it reports (logged as `<part>_loss`)

    def __call__(
        self, model, batch: Batch, pad_id: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...

    def fingerprint(self) -> dict[str, Any]: ...


class SFTLoss:
    """BIGRec's and IFairLRS's loss: per-sample (weighted) cross-entropy on the target title."""

    # SFT has no SubTB term; it reports a zero one so that the three methods' log.csv have the same
    # columns, with subtb_loss 0 for the SFT methods.
    parts = ("sft", "subtb")
    uses_p_ui = False  # no SASRec scores in its batches
    p_ui_normalisation = "mean"

    @classmethod
    def from_config(cls, block: Mapping | None = None, trie: Trie | None = None, granularity: int = 1, **_):
        """SFT has no settings: the arguments of make_loss are accepted and unused."""
        return cls()

    def __call__(
        self, model, batch: Batch, pad_id: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        sft = sft_losses(model, batch)
        return sft, {"sft": sft, "subtb": torch.zeros_like(sft)}

    def fingerprint(self) -> dict[str, Any]:
        return {"loss": "sft"}


@dataclass
class FlowerLoss:
    """Flower's loss L = sft_weight * L_SFT + lambda * L_SubTB (docs/method.md section 4), per sample.

    `lambda_` is the config key `lambda`; sft_weight 0 is pure SubTB (the published RQ1 code); the block's other keys select the process reward (plain,
    div, add), the on-policy sampling temperature and what SubTB's log pi is normalised over
    (`normalise`: children or vocab); `granularity` (trie.granularity) spaces the SubTB states.
    """

    trie: Trie
    lambda_: float
    reward: str
    sample_temperature: float
    granularity: int
    normalise: str
    sft_weight: float

    parts = ("sft", "subtb")

    @property
    def p_ui_normalisation(self) -> str:
        """How the SASRec rows are normalised for this reward (the published add: min-max)."""
        return REWARD_P_UI_NORMALISATION.get(self.reward, "mean")

    def __post_init__(self) -> None:
        if self.normalise not in NORMALISATIONS:
            raise ValueError(
                f"config block `flower`: normalise {self.normalise!r}; expected one of {NORMALISATIONS}"
            )

    @property
    def uses_p_ui(self) -> bool:
        """Whether the batches need SASRec's p_ui (the div and add rewards do; plain does not)."""
        return self.reward != "plain"

    @classmethod
    def from_config(cls, block: Mapping | None, trie: Trie, granularity: int, **_) -> "FlowerLoss":
        """From the `flower:` config block (schema defaults for the keys it leaves out)."""
        block = dict(block or {})
        clash = sorted({"trie", "granularity"} & set(block))
        if clash:
            raise ValueError(f"config block `flower`: unknown key(s) {clash}")
        return settings_from_block(cls, {**block, "trie": trie, "granularity": granularity}, "flower")

    def __call__(
        self, model, batch: Batch, pad_id: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        sft, subtb = flower_losses(
            model,
            batch,
            self.trie,
            pad_id,
            generator,
            reward=self.reward,
            sample_temperature=self.sample_temperature,
            granularity=self.granularity,
            normalise=self.normalise,
        )
        total = self.sft_weight * sft + self.lambda_ * subtb  # (B,)
        return total, {"sft": sft, "subtb": subtb}

    def fingerprint(self) -> dict[str, Any]:
        return {
            "loss": "flower",
            "lambda": self.lambda_,
            "reward": self.reward,
            "sample_temperature": self.sample_temperature,
            "granularity": self.granularity,
            "normalise": self.normalise,
            "sft_weight": self.sft_weight,
        }


def _preference_loss(form: str):
    """Builder of a PreferenceLoss of `form` from a method's align settings (rules/common.smk
    get_align_settings: beta, sampler, negatives, seed, dmpo_reduce for DMPO)."""

    def build(block: Mapping | None, trie: Trie | None = None, granularity: int = 1, *, reference=None):
        block = dict(block or {})
        block.pop("family", None)
        if reference is None:
            raise ValueError(f"preference loss {form}: needs the frozen reference model")
        return PreferenceLoss(form=form, reference=reference, **block)

    return build


def _ppo_loss(block: Mapping | None, trie: Trie | None = None, granularity: int = 1, *, reference=None):
    """PPOLoss from a method's align settings ({"family", "seed", "ppo": the align.ppo block})."""
    block = dict(block or {})
    ppo = {k: v for k, v in dict(block.get("ppo") or {}).items() if k != "tune"}
    if reference is None or trie is None:
        raise ValueError("PPO: needs the trie and the frozen reference model")
    return PPOLoss(trie=trie, reference=reference, seed=block.get("seed", 42), **ppo)


# Loss name (a registry entry's `loss`) -> a builder (block, trie, granularity, reference=...) -> loss.
LOSSES: dict[str, Any] = {
    "sft": SFTLoss.from_config,
    "flower": FlowerLoss.from_config,
    "sdpo": _preference_loss("sdpo"),
    "dmpo": _preference_loss("dmpo"),
    "dpo": _preference_loss("dpo"),
    "ppo": _ppo_loss,
}


def make_loss(
    method: str,
    block: Mapping | None = None,
    trie: Trie | None = None,
    granularity: int = 1,
    reference=None,
) -> TuneLoss:
    """The loss of method `method` (registry name), built from its config block (`flower:` for Flower,
    its align settings for the RQ3 methods, which also take the frozen `reference` model)."""
    entry = methods.get(method)
    if entry.loss not in LOSSES:
        raise ValueError(f"method {method!r} is not trained by the tuning loop; trained: {methods.trained()}")
    return LOSSES[entry.loss](block, trie, granularity, reference=reference)

"""Stop a training run that diverged, before it writes a model (and so before any metrics exist).

A learning rate far too high ends in one of three ways, none of which may pass as a result:
- a NaN or infinite loss (checked after every optimizer step, on the total and on each part);
- a model worse than guessing: a validation SFT loss (mean token NLL, nats) above
  WORSE_THAN_UNIFORM x ln(vocabulary), the loss of the uniform distribution over the vocabulary;
- a collapsed model, in either of two signatures:
  (a) uniform output: the validation loss and every training step's SFT loss of the epoch equal
      ln(vocabulary) within UNIFORM_TOL nats (the model predicts every token with probability 1/V;
      tune.learning_rate 30000 on the tiny preset ends exactly there, 10.8027 = ln 49152, flat);
  (b) the validation SFT loss back near ln(vocabulary) (>= COLLAPSED x ln V) after an earlier epoch's
      was clearly below it (< INFORMED x ln V): the model knew something and lost it.
  Both compare like with like (the unweighted SFT loss; a loss without an `sft` part skips (a)), and
  neither fires for an untrained random model (the tiny preset's), which starts near ln V and learns
  slowly: (a) needs the exact, flat value, (b) an informed epoch first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

WORSE_THAN_UNIFORM = 1.5
COLLAPSED = 0.95
INFORMED = 0.8
UNIFORM_TOL = 1e-3
_ADVICE = "lower tune.learning_rate (or raise tune.warmup_ratio) and rerun; no model or metrics were written"


class TrainingDiverged(RuntimeError):
    """The loss went non-finite or the model collapsed; the message names the step and the loss."""


@dataclass
class DivergenceGuard:
    """Checks one training run's losses (create one per run, or `resumed` from its log rows)."""

    name: str  # the method, for the message
    vocab_size: int
    best_valid: float = math.inf  # lowest validation loss of the epochs before
    epoch_sft: list[float] = field(default_factory=list)  # SFT loss of each step of the current epoch
    epoch: int | None = None

    @classmethod
    def resumed(cls, name: str, vocab_size: int, rows: Sequence[Mapping]) -> DivergenceGuard:
        """A guard that continues a run whose log rows so far are `rows` (its validation losses)."""
        valid = [float(r["loss"]) for r in rows if r.get("split") == "valid"]
        return cls(name, vocab_size, min(valid, default=math.inf))

    def check_step(self, step: int, epoch: int, loss: float, parts: Mapping[str, float], lr: float) -> None:
        """After each optimizer step: every loss finite; remembers the epoch's SFT losses."""
        bad = {key: value for key, value in {"loss": loss, **parts}.items() if not math.isfinite(value)}
        if bad:
            raise TrainingDiverged(
                f"{self.name}: training diverged at step {step} (epoch {epoch}, learning rate {lr:.3g}): "
                f"{', '.join(f'{k} = {v}' for k, v in bad.items())}; {_ADVICE}"
            )
        if epoch != self.epoch:
            self.epoch, self.epoch_sft = epoch, []
        if step > 1 and "sft" in parts:  # step 1's loss is the untrained model's: it says nothing
            self.epoch_sft.append(float(parts["sft"]))

    def check_valid(self, epoch: int, valid_loss: float) -> None:
        """After each epoch's validation: finite, no worse than uniform, not collapsed to uniform."""
        uniform = math.log(self.vocab_size)
        where = f"{self.name}: after epoch {epoch} the validation SFT loss is {valid_loss:.6g} nats"
        if not math.isfinite(valid_loss):
            raise TrainingDiverged(f"{where}; training diverged; {_ADVICE}")
        if valid_loss > WORSE_THAN_UNIFORM * uniform:
            raise TrainingDiverged(
                f"{where}, worse than guessing uniformly over the {self.vocab_size} tokens "
                f"(ln V = {uniform:.4g}): training diverged; {_ADVICE}"
            )
        steps = self.epoch_sft if self.epoch == epoch else []
        if steps and all(abs(x - uniform) < UNIFORM_TOL for x in [*steps, valid_loss]):
            raise TrainingDiverged(
                f"{where} and each of the epoch's {len(steps)} steps' is ln V = {uniform:.4f} (within "
                f"{UNIFORM_TOL}): the model collapsed to the uniform distribution over the vocabulary; {_ADVICE}"
            )
        if self.best_valid < INFORMED * uniform and valid_loss >= COLLAPSED * uniform:
            raise TrainingDiverged(
                f"{where}, back at ln V = {uniform:.4g} (uniform over the vocabulary) after an earlier "
                f"epoch's {self.best_valid:.4g}: the model collapsed; {_ADVICE}"
            )
        self.best_valid = min(self.best_valid, valid_loss)

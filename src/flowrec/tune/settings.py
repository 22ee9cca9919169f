"""The `tune:` config block: the training loop's settings, shared by BIGRec, IFairLRS and Flower."""

from dataclasses import dataclass

from flowrec.settings import settings_from_block


@dataclass
class TuneSettings:
    """The `tune:` block (config/schema.yaml holds every default and each key's meaning)."""

    train_samples: int | None  # train samples used (a seeded random subset); None: all
    valid_samples: int | None  # valid samples for the validation loss; None: all
    epochs: int  # maximum epochs
    batch_size: int  # effective batch (gradient accumulation over micro batches)
    micro_batch_size: int  # samples per forward pass
    group_by_length: bool  # micro batches of similar prompt length within each global batch
    learning_rate: float  # AdamW learning rate
    weight_decay: float  # AdamW weight decay
    warmup_ratio: float  # share of steps with linear warm-up
    patience: int  # early stopping patience in epochs (validation loss)
    seed: int  # training seed
    max_grad_norm: float | None  # clip the global gradient norm to this; None: no clipping
    precision: str  # auto (bf16 autocast on CUDA, fp32 on CPU) | bf16 | fp32; weights stay fp32
    checkpoint_steps: int | None  # resume checkpoint every N optimizer steps (and after each epoch)
    log_steps: int  # a progress line in the log every N optimizer steps

    @classmethod
    def from_config(cls, block: dict | None) -> "TuneSettings":
        """From the `tune:` block; keys it leaves out take their schema defaults."""
        return settings_from_block(cls, block, "tune")

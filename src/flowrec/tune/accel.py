"""Hugging Face Accelerate in the training loop: device, bf16 autocast, gradient clipping, cross-rank sums.

The loop keeps its own step (a Flower step encodes each prompt once and shares it between the SFT
target, the on-policy sampler and the sampled title, docs/method.md section 8), so it does not hand its
model to `Accelerator.prepare` (which would wrap it in DDP, whose reducer does not allow the two
forwards of one Flower step); it uses the Accelerator for what is not step-specific:

- the device: `accelerator.device` (cuda:LOCAL_RANK under torchrun, the CPU without CUDA);
- mixed precision: `accelerator.autocast()` with mixed_precision "bf16" or "no";
- `accelerator.backward`, `accelerator.clip_grad_norm_` and `accelerator.reduce` (sums across ranks).

Master weights: the model's own parameters are the fp32 master weights and AdamW's state is fp32; only
the forward runs in bf16 (autocast casts each matmul's inputs). Chosen over bf16 weights with an fp32
copy in the optimizer because it keeps one copy of the weights, needs no custom optimizer, and is what
Accelerate's and transformers' bf16 mode does: lr * grad updates below bf16's resolution (2^-8 of a
weight) are kept instead of rounded away. Trainable parameters that arrive in another dtype (a model
loaded in bf16) are cast to fp32 on entry.
"""

import logging
import math

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from flowrec.distributed import world

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp32")


def mixed_precision(precision: str, device: torch.device) -> str:
    """Accelerate's mixed_precision for the `tune.precision` setting on `device`: "bf16" or "no"."""
    if precision not in PRECISIONS:
        raise ValueError(f"tune.precision: {precision!r}; expected one of {list(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "no"
    return "bf16" if precision == "bf16" else "no"


def make_accelerator(precision: str, device: torch.device) -> Accelerator:
    """An Accelerator for `device` (the model's) with the autocast of `precision`.

    Accelerate keeps its state in a per-process singleton that refuses a second, different
    mixed_precision; one process may train several models in turn (tests, distfit's trl baselines before
    the loop), so the accelerator state is reset first, as transformers' TrainingArguments does. The
    process state (the torch.distributed group) is kept.
    """
    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(mixed_precision=mixed_precision(precision, device), cpu=device.type == "cpu")
    if accelerator.device.type != device.type:
        raise RuntimeError(f"Accelerate chose device {accelerator.device} for a model on {device}")
    if accelerator.num_processes != world()[1]:  # accelerator.reduce must sum over every rank
        raise RuntimeError(
            f"Accelerate sees {accelerator.num_processes} processes, torch.distributed {world()[1]}"
        )
    return accelerator


def placement(accelerator: Accelerator) -> torch.device:
    """Where the run's tensors go: `accelerator.device`, but the plain CPU device for a CPU run
    (Accelerate names it cpu:LOCAL_RANK under torchrun, which torch.load cannot map checkpoints to)."""
    device = accelerator.device
    return torch.device("cpu") if device.type == "cpu" else device


def fp32_master_weights(params: list[torch.nn.Parameter]) -> int:
    """Cast the trainable parameters that are not fp32 to fp32 in place; returns how many were cast."""
    cast = 0
    for p in params:
        if p.dtype != torch.float32:
            p.data = p.data.float()
            cast += 1
    if cast:
        log.info("%d trainable parameter tensors cast to fp32 (master weights)", cast)
    return cast


def clip_gradients(
    accelerator: Accelerator, params: list[torch.nn.Parameter], max_norm: float | None
) -> float:
    """The global L2 norm of the gradients before clipping; scales them to `max_norm` when above it.

    Without `max_norm` the norm is computed with an infinite bound: torch scales by min(1, inf / norm),
    i.e. by exactly 1.0, so the gradients are left bit for bit as they were.
    """
    with_grad = [p for p in params if p.grad is not None]
    if not with_grad:
        return 0.0
    norm = accelerator.clip_grad_norm_(with_grad, max_norm if max_norm is not None else math.inf)
    return float(norm)

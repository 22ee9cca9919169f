"""One optimizer step of the training loop: micro batches under autocast, gradient sum across ranks,
clipping, AdamW and the learning-rate schedule (docs/method.md section 4).

Under torch.distributed each rank takes a slice of the global batch and the gradients are summed across
ranks in one flat all-reduce before the step (each rank's loss is already divided by the global batch
size), so the loss curve is the one a single process would give with the same global batch. The
all-reduce is the loop's own, not DDP's reducer: a Flower step runs two forwards sharing one graph,
which DDP does not support without static-graph mode.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from accelerate import Accelerator

from flowrec.distributed import world
from flowrec.tune.accel import clip_gradients, placement
from flowrec.tune.data import TuneData
from flowrec.tune.objectives import TuneLoss
from flowrec.tune.settings import TuneSettings


@dataclass
class Optimisation:
    """The trained parameters, AdamW and its learning-rate schedule."""

    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler


@dataclass
class StepResult:
    loss: float  # mean total loss of the global batch
    parts: dict[str, float]  # mean of each part of the loss
    lr: float  # the learning rate the step used
    grad_norm: float  # global gradient norm before clipping


def make_optimisation(model, settings: TuneSettings, n_train: int) -> Optimisation:
    """AdamW over the trainable parameters; linear warm-up over warmup_ratio of all steps, then linear
    decay to zero at the last step of the last epoch."""
    params = [p for p in model.parameters() if p.requires_grad]
    if world()[1] > 1:  # every rank starts from rank 0's weights
        for tensor in model.state_dict().values():
            torch.distributed.broadcast(tensor, 0)
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    total_steps = max(math.ceil(n_train / settings.batch_size) * settings.epochs, 1)
    warmup = int(settings.warmup_ratio * total_steps)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(total_steps - warmup, 1))

    return Optimisation(params, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule))


def sync_gradients(accelerator: Accelerator, params: list[torch.nn.Parameter]) -> None:
    """Sum the gradients of all ranks in one flat all-reduce (nothing to do in one process)."""
    if accelerator.num_processes == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = accelerator.reduce(torch.cat([g.reshape(-1) for g in grads]), reduction="sum")
    offset = 0
    for p, g in zip(params, grads, strict=True):
        p.grad = flat[offset : offset + g.numel()].view_as(g).clone()
        offset += g.numel()


def optimizer_step(
    accelerator: Accelerator,
    model,
    loss: TuneLoss,
    data: TuneData,
    global_batch: np.ndarray,
    settings: TuneSettings,
    opt: Optimisation,
    pad_id: int,
    generator: torch.Generator,
) -> StepResult:
    """One optimizer step over `global_batch` (this rank's slice, in micro batches)."""
    rank, size = world()
    device = placement(accelerator)
    mine = global_batch[rank::size]
    if settings.group_by_length:
        # Similar prompt lengths share a micro batch, so little of it is padding; the gradient is still
        # the sum over the whole global batch (order only changes the float summation order).
        mine = mine[np.argsort(data.prompt_lengths(mine), kind="stable")]
    sums = torch.zeros(1 + len(loss.parts), dtype=torch.float64, device=device)
    for start in range(0, len(mine), settings.micro_batch_size):
        batch = data.batch(mine[start : start + settings.micro_batch_size], pad_id, device)
        with accelerator.autocast():
            total, parts = loss(model, batch, pad_id, generator)  # (B,), {part: (B,)}
        accelerator.backward(total.sum() / len(global_batch))
        sums += torch.stack([total.sum(), *(parts[p].sum() for p in loss.parts)]).detach().double()
    sync_gradients(accelerator, opt.params)
    grad_norm = clip_gradients(accelerator, opt.params, settings.max_grad_norm)
    lr = opt.optimizer.param_groups[0]["lr"]
    opt.optimizer.step()
    opt.scheduler.step()
    opt.optimizer.zero_grad(set_to_none=True)
    mean, *part_means = (accelerator.reduce(sums, reduction="sum") / len(global_batch)).tolist()
    return StepResult(mean, dict(zip(loss.parts, part_means, strict=True)), lr, grad_norm)

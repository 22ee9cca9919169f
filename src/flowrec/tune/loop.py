"""The training loop shared by BIGRec, IFairLRS and Flower (docs/method.md sections 4-5).

The loop takes the method's loss as an object (flowrec.tune.objectives) and knows nothing of the
method itself: epochs over a seeded permutation, gradient accumulation (batch_size / micro_batch_size),
AdamW with linear warm-up and decay, early stopping on the validation SFT loss, a checkpoint after
every epoch with resume from it (flowrec.tune.checkpoint), a per-step CSV log and a loss plot
(flowrec.tune.training_log). Under torch.distributed (torchrun) each rank takes a slice of every
global batch and the gradients are summed across ranks before the optimizer step, so the loss curve
is the one a single process would give with the same global batch.
"""

import logging
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from flowrec.distributed import world
from flowrec.tune.checkpoint import Checkpoints, Progress, fingerprint
from flowrec.tune.data import TuneData
from flowrec.tune.divergence_checks import DivergenceGuard
from flowrec.tune.forward import sft_losses
from flowrec.tune.objectives import TuneLoss
from flowrec.tune.settings import TuneSettings
from flowrec.tune.training_log import log_columns, plot_log, train_row, valid_row, write_log

log = logging.getLogger(__name__)


@dataclass
class TrainPaths:
    checkpoints: Path  # folder with last.pt and best.pt (kept out of Snakemake's outputs so it survives)
    log_csv: Path
    loss_png: Path


@dataclass
class TrainResult:
    rows: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_valid_loss: float = math.inf
    epochs_run: int = 0
    resumed_from_epoch: int | None = None


@dataclass
class Optimisation:
    """The trained parameters, AdamW and its learning-rate schedule."""

    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler


def _all_sum(values: torch.Tensor) -> torch.Tensor:
    if world()[1] > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def _sync_gradients(params: list[torch.nn.Parameter]) -> None:
    """Sum the gradients of all ranks in one flat all-reduce (each rank's loss is already divided by
    the global batch size). A manual all-reduce instead of the DDP wrapper: a Flower step runs two
    forwards sharing one graph, which DDP's reducer does not support without static-graph mode."""
    if world()[1] == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p, g in zip(params, grads, strict=True):
        p.grad = flat[offset : offset + g.numel()].view_as(g).clone()
        offset += g.numel()


def seed_everything(seed: int, rank: int, device: torch.device) -> torch.Generator:
    """Seed torch, numpy and random for this rank; the returned generator drives on-policy sampling."""
    torch.manual_seed(seed + rank)
    np.random.seed(seed + rank)
    random.seed(seed + rank)
    return torch.Generator(device=device).manual_seed(seed + 1000 + rank)


def make_optimisation(model, settings: TuneSettings, n_train: int) -> Optimisation:
    """AdamW over the trainable parameters; linear warm-up over warmup_ratio of all steps, then linear
    decay to zero at the last step of the last epoch."""
    params = [p for p in model.parameters() if p.requires_grad]
    if world()[1] > 1:  # every rank starts from rank 0's weights
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, 0)
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    total_steps = max(math.ceil(n_train / settings.batch_size) * settings.epochs, 1)
    warmup = int(settings.warmup_ratio * total_steps)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(total_steps - warmup, 1))

    return Optimisation(params, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule))


def optimizer_step(
    model,
    loss: TuneLoss,
    data: TuneData,
    global_batch: np.ndarray,
    settings: TuneSettings,
    opt: Optimisation,
    pad_id: int,
    generator: torch.Generator,
) -> tuple[float, dict[str, float], float]:
    """One optimizer step over `global_batch` (this rank's slice, in micro batches); returns the batch's
    mean total loss, the mean of each of the loss's parts, and the learning rate the step used."""
    rank, size = world()
    device = next(model.parameters()).device
    mine = global_batch[rank::size]
    sums = torch.zeros(1 + len(loss.parts), dtype=torch.float64, device=device)
    for start in range(0, len(mine), settings.micro_batch_size):
        batch = data.batch(mine[start : start + settings.micro_batch_size], pad_id, device)
        total, parts = loss(model, batch, pad_id, generator)  # (B,), {part: (B,)}
        (total.sum() / len(global_batch)).backward()
        sums += torch.stack([total.sum(), *(parts[p].sum() for p in loss.parts)]).detach().double()
    _sync_gradients(opt.params)
    lr = opt.optimizer.param_groups[0]["lr"]
    opt.optimizer.step()
    opt.scheduler.step()
    opt.optimizer.zero_grad(set_to_none=True)
    mean, *part_means = (_all_sum(sums) / len(global_batch)).tolist()
    return mean, dict(zip(loss.parts, part_means, strict=True)), lr


def train_epoch(
    model,
    loss: TuneLoss,
    data: TuneData,
    settings: TuneSettings,
    opt: Optimisation,
    progress: Progress,
    epoch: int,
    pad_id: int,
    generator: torch.Generator,
    name: str,
    guard: DivergenceGuard,
) -> None:
    """The optimizer steps of one epoch over a permutation seeded by (seed, epoch); a log row each;
    `guard` stops a run whose loss went NaN or infinite (flowrec.tune.divergence_checks)."""
    order = np.random.default_rng([settings.seed, epoch]).permutation(len(data))
    steps = math.ceil(len(data) / settings.batch_size)
    desc = f"{name} epoch {epoch + 1}/{settings.epochs}"
    bar = tqdm(range(steps), desc=desc, disable=world()[0] != 0)
    for b in bar:
        global_batch = order[b * settings.batch_size : (b + 1) * settings.batch_size]
        mean, parts, lr = optimizer_step(model, loss, data, global_batch, settings, opt, pad_id, generator)
        progress.step += 1
        guard.check_step(progress.step, epoch, mean, parts, lr)
        progress.rows.append(train_row(progress.step, epoch, mean, parts, lr))
        bar.set_postfix(loss=f"{mean:.4f}", **{p: f"{v:.4f}" for p, v in parts.items()}, lr=f"{lr:.2e}")


@torch.no_grad()
def validation_loss(model, data: TuneData, micro_batch_size: int, pad_id: int, device) -> float:
    """Mean per-sample SFT loss over `data` (sharded across ranks), whatever the training loss."""
    rank, size = world()
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    mine = np.arange(len(data))[rank::size]
    for start in range(0, len(mine), micro_batch_size):
        loss = sft_losses(model, data.batch(mine[start : start + micro_batch_size], pad_id, device))
        total += torch.stack(
            [loss.double().sum(), torch.tensor(float(len(loss)), device=device, dtype=torch.float64)]
        )
    model.train(was_training)
    total = _all_sum(total)
    return float(total[0] / total[1]) if total[1] > 0 else math.nan


def early_stopping(progress: Progress, epoch: int, valid: float, patience: int) -> bool:
    """Record epoch `epoch`'s validation loss in `progress`; True when it is the best so far.

    A NaN loss never improves (except in the first epoch); `patience` epochs without improvement stop.
    """
    improved = not (valid >= progress.best_valid_loss) or progress.best_epoch < 0
    if improved:
        progress.best_epoch, progress.best_valid_loss, progress.bad_epochs = epoch, valid, 0
    else:
        progress.bad_epochs += 1
    progress.stopped = progress.bad_epochs >= patience
    return improved


def train(
    model,
    loss: TuneLoss,
    train_data: TuneData,
    valid_data: TuneData,
    settings: TuneSettings,
    paths: TrainPaths,
    pad_id: int,
    *,
    name: str,
    on_checkpoint: Callable[[int], None] | None = None,
) -> TrainResult:
    """Fine-tune `model` in place with `loss`; on return it holds the best epoch's weights.

    `name` (the method) labels the progress bar and the plot and enters the checkpoint fingerprint.
    Resumes from paths.checkpoints/last.pt when it was written with the same loss, settings and data.
    `on_checkpoint(epoch)` runs after each epoch's checkpoint (tests use it to interrupt a run).
    """
    if settings.batch_size % settings.micro_batch_size:
        raise ValueError(
            f"tune.batch_size ({settings.batch_size}) must be a multiple of "
            f"tune.micro_batch_size ({settings.micro_batch_size})"
        )
    rank, size = world()
    device = next(model.parameters()).device
    generator = seed_everything(settings.seed, rank, device)
    opt = make_optimisation(model, settings, len(train_data))
    loss_settings = loss.fingerprint()
    checkpoints = Checkpoints(
        paths.checkpoints,
        fingerprint(name, loss_settings, settings, size, train_data, valid_data),
        device,
    )
    progress = checkpoints.resume(model, opt.optimizer, opt.scheduler, generator)
    result = TrainResult(resumed_from_epoch=progress.epoch if progress else None)
    progress = progress or Progress()
    columns = log_columns(loss.parts)
    stored_settings = {"tune": asdict(settings), "loss": loss_settings}  # in last.pt, for the record
    guard = DivergenceGuard.resumed(name, model.config.vocab_size, progress.rows)
    model.train()
    for epoch in range(settings.epochs if progress.stopped else progress.epoch + 1, settings.epochs):
        train_epoch(model, loss, train_data, settings, opt, progress, epoch, pad_id, generator, name, guard)
        valid = validation_loss(model, valid_data, settings.micro_batch_size, pad_id, device)
        guard.check_valid(epoch, valid)  # before the checkpoint: a diverged epoch is never resumed from
        progress.rows.append(valid_row(progress.step, epoch, valid, loss.parts))
        progress.epoch = epoch
        improved = early_stopping(progress, epoch, valid, settings.patience)
        log.info(
            "epoch %d: valid loss %.4f (best %.4f at epoch %d)",
            epoch,
            valid,
            progress.best_valid_loss,
            progress.best_epoch,
        )
        checkpoints.save(model, opt.optimizer, opt.scheduler, generator, progress, improved, stored_settings)
        if rank == 0:
            write_log(progress.rows, paths.log_csv, columns)
        if size > 1:
            dist.barrier()
        result.epochs_run += 1
        if on_checkpoint is not None:
            on_checkpoint(epoch)
        if progress.stopped:
            log.info("early stopping after epoch %d (patience %d)", epoch, settings.patience)
            break
    checkpoints.restore_best(model)
    if rank == 0:
        write_log(progress.rows, paths.log_csv, columns)
        plot_log(progress.rows, paths.loss_png, columns, name)
    result.rows, result.best_epoch = progress.rows, progress.best_epoch
    result.best_valid_loss = progress.best_valid_loss
    return result

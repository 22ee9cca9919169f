"""The training loop shared by BIGRec, IFairLRS and Flower (docs/method.md sections 4-5).

The loop takes the method's loss as an object (flowrec.tune.objectives) and knows nothing of the
method itself: epochs over a seeded permutation, gradient accumulation (batch_size / micro_batch_size),
AdamW with linear warm-up and decay, gradient clipping, bf16 autocast over fp32 master weights through
Accelerate (flowrec.tune.accel), early stopping on the validation SFT loss, a checkpoint every
checkpoint_steps optimizer steps and after every epoch with resume from it, mid-epoch included
(flowrec.tune.checkpoint), a per-step CSV log, a progress line in the rule log every log_steps steps
and a loss plot (flowrec.tune.training_log). One optimizer step, data parallel across torchrun ranks
included, is flowrec.tune.step.
"""

import logging
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from accelerate import Accelerator
from tqdm import tqdm

from flowrec.distributed import world
from flowrec.tune.accel import fp32_master_weights, make_accelerator, placement
from flowrec.tune.checkpoint import Checkpoints, Progress, fingerprint
from flowrec.tune.data import TuneData
from flowrec.tune.divergence_checks import DivergenceGuard
from flowrec.tune.forward import sft_losses
from flowrec.tune.objectives import TuneLoss
from flowrec.tune.settings import TuneSettings
from flowrec.tune.step import Optimisation, make_optimisation, optimizer_step
from flowrec.tune.training_log import ProgressLog, log_columns, plot_log, train_row, valid_row, write_log

log = logging.getLogger(__name__)


@dataclass
class TrainPaths:
    checkpoints: Path  # folder with last.pt and best.pt (kept out of Snakemake's outputs so it survives)
    log_csv: Path
    loss_png: Path | None  # None: no plot (no matplotlib needed, e.g. bench/gpu_smoke.py)


@dataclass
class TrainResult:
    rows: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_valid_loss: float = math.inf
    epochs_run: int = 0
    resumed_from_epoch: int | None = None  # the last finished epoch of the checkpoint resumed from
    resumed_from_step: int | None = None  # the optimizer steps it had taken


def seed_everything(seed: int, rank: int, device: torch.device) -> torch.Generator:
    """Seed torch, numpy and random for this rank; the returned generator drives on-policy sampling."""
    torch.manual_seed(seed + rank)
    np.random.seed(seed + rank)
    random.seed(seed + rank)
    return torch.Generator(device=device).manual_seed(seed + 1000 + rank)


@dataclass
class Run:
    """What every step of one training run needs besides the data."""

    accelerator: Accelerator
    model: Any
    loss: TuneLoss
    settings: TuneSettings
    opt: Optimisation
    checkpoints: Checkpoints
    paths: TrainPaths
    columns: list[str]
    pad_id: int
    generator: torch.Generator
    progress_log: ProgressLog
    stored_settings: dict
    on_checkpoint: Callable[[Progress], None] | None
    guard: DivergenceGuard  # stops a run whose loss went non-finite or collapsed (divergence_checks)


def save_checkpoint(run: Run, progress: Progress, improved: bool) -> None:
    """last.pt (and best.pt when `improved`) and log.csv so far; then the on_checkpoint hook."""
    run.checkpoints.save(
        run.model,
        run.opt.optimizer,
        run.opt.scheduler,
        run.generator,
        progress,
        improved,
        run.stored_settings,
    )
    if world()[0] == 0:
        write_log(progress.rows, run.paths.log_csv, run.columns)
    if world()[1] > 1:
        dist.barrier()
    if run.on_checkpoint is not None:
        run.on_checkpoint(progress)


def train_epoch(run: Run, data: TuneData, progress: Progress, epoch: int, name: str) -> None:
    """The optimizer steps of epoch `epoch` from its step progress.epoch_step on, over a permutation
    seeded by (seed, epoch); a log row each, a checkpoint every checkpoint_steps steps."""
    settings = run.settings
    order = np.random.default_rng([settings.seed, epoch]).permutation(len(data))
    steps = math.ceil(len(data) / settings.batch_size)
    desc = f"{name} epoch {epoch + 1}/{settings.epochs}"
    first = progress.epoch_step
    bar = tqdm(range(first, steps), desc=desc, initial=first, total=steps, disable=world()[0] != 0)
    for b in bar:
        global_batch = order[b * settings.batch_size : (b + 1) * settings.batch_size]
        result = optimizer_step(
            run.accelerator,
            run.model,
            run.loss,
            data,
            global_batch,
            settings,
            run.opt,
            run.pad_id,
            run.generator,
        )
        progress.step += 1
        progress.epoch_step = b + 1
        run.guard.check_step(progress.step, epoch, result.loss, result.parts, result.lr)
        row = train_row(progress.step, epoch, result.loss, result.parts, result.lr, result.grad_norm)
        progress.rows.append(row)
        run.progress_log.step(row, len(global_batch), end_of_epoch=b + 1 == steps)
        bar.set_postfix(loss=f"{result.loss:.4f}", lr=f"{result.lr:.2e}", grad_norm=f"{result.grad_norm:.3g}")
        every = settings.checkpoint_steps
        if every and progress.step % every == 0 and b + 1 < steps:  # the epoch's end checkpoints anyway
            save_checkpoint(run, progress, improved=False)


@torch.no_grad()
def validation_loss(
    accelerator: Accelerator, model, data: TuneData, micro_batch_size: int, pad_id: int
) -> float:
    """Mean per-sample SFT loss over `data` (sharded across ranks), whatever the training loss."""
    rank, size = world()
    device = placement(accelerator)
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    mine = np.arange(len(data))[rank::size]
    for start in range(0, len(mine), micro_batch_size):
        with accelerator.autocast():
            loss = sft_losses(model, data.batch(mine[start : start + micro_batch_size], pad_id, device))
        total += torch.stack(
            [loss.double().sum(), torch.tensor(float(len(loss)), device=device, dtype=torch.float64)]
        )
    model.train(was_training)
    total = accelerator.reduce(total, reduction="sum")
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
    on_checkpoint: Callable[[Progress], None] | None = None,
) -> TrainResult:
    """Fine-tune `model` in place with `loss`; on return it holds the best epoch's weights.

    `name` (the method) labels the progress bar and the plot and enters the checkpoint fingerprint.
    Resumes from paths.checkpoints/last.pt when it was written with the same loss, settings and data,
    mid-epoch when it was written mid-epoch. `on_checkpoint(progress)` runs after each checkpoint
    (tests use it to interrupt a run).
    """
    if settings.batch_size % settings.micro_batch_size:
        raise ValueError(
            f"tune.batch_size ({settings.batch_size}) must be a multiple of "
            f"tune.micro_batch_size ({settings.micro_batch_size})"
        )
    rank, size = world()
    accelerator = make_accelerator(settings.precision, next(model.parameters()).device)
    model.to(placement(accelerator))
    fp32_master_weights([p for p in model.parameters() if p.requires_grad])
    generator = seed_everything(settings.seed, rank, placement(accelerator))
    opt = make_optimisation(model, settings, len(train_data))
    loss_settings = loss.fingerprint()
    checkpoints = Checkpoints(
        paths.checkpoints,
        fingerprint(name, loss_settings, settings, size, train_data, valid_data),
        placement(accelerator),
    )
    progress = checkpoints.resume(model, opt.optimizer, opt.scheduler, generator)
    result = TrainResult(
        resumed_from_epoch=progress.epoch if progress else None,
        resumed_from_step=progress.step if progress else None,
    )
    progress = progress or Progress()
    steps_per_epoch = math.ceil(len(train_data) / settings.batch_size)
    log.info(
        "%s: settings in effect: tune %s, loss %s; device %s, autocast %s, world size %d, "
        "%d train / %d valid samples, %d steps per epoch",
        name,
        asdict(settings),
        loss_settings,
        placement(accelerator),
        accelerator.mixed_precision,
        size,
        len(train_data),
        len(valid_data),
        steps_per_epoch,
    )
    columns = log_columns(loss.parts)
    run = Run(
        accelerator,
        model,
        loss,
        settings,
        opt,
        checkpoints,
        paths,
        columns,
        pad_id,
        generator,
        ProgressLog(log, settings.log_steps, steps_per_epoch * settings.epochs, loss.parts, rank == 0),
        {"tune": asdict(settings), "loss": loss_settings},  # in last.pt, for the record
        on_checkpoint,
        DivergenceGuard.resumed(name, model.config.vocab_size, progress.rows),
    )
    model.train()
    for epoch in range(settings.epochs if progress.stopped else progress.epoch + 1, settings.epochs):
        train_epoch(run, train_data, progress, epoch, name)
        valid = validation_loss(accelerator, model, valid_data, settings.micro_batch_size, pad_id)
        run.guard.check_valid(epoch, valid)  # before the checkpoint: a diverged epoch is never resumed from
        progress.rows.append(valid_row(progress.step, epoch, valid, loss.parts))
        progress.epoch, progress.epoch_step = epoch, 0
        improved = early_stopping(progress, epoch, valid, settings.patience)
        log.info(
            "epoch %d: valid loss %.4f (best %.4f at epoch %d)",
            epoch,
            valid,
            progress.best_valid_loss,
            progress.best_epoch,
        )
        result.epochs_run += 1
        save_checkpoint(run, progress, improved)
        if progress.stopped:
            log.info("early stopping after epoch %d (patience %d)", epoch, settings.patience)
            break
    checkpoints.restore_best(model)
    if rank == 0:
        write_log(progress.rows, paths.log_csv, columns)
        if paths.loss_png is not None:
            plot_log(progress.rows, paths.loss_png, columns, name)
    result.rows, result.best_epoch = progress.rows, progress.best_epoch
    result.best_valid_loss = progress.best_valid_loss
    return result

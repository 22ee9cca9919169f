"""The training loop shared by BIGRec, IFairLRS and Flower (method.md sections 4-5).

Epochs over a seeded permutation, gradient accumulation (batch_size / micro_batch_size), AdamW with
linear warm-up and decay, early stopping on the validation SFT loss, a checkpoint after every epoch
(weights, optimizer, scheduler, RNG states, step, settings, seed) and resume from it, a per-step CSV
log and a loss plot. Under torch.distributed (torchrun) each rank takes a slice of every global batch
and the gradients are summed across ranks before the optimizer step, so the loss curve is the one a
single process would give with the same global batch.
"""

import csv
import json
import logging
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from flowrec.distributed import world
from flowrec.io import atomic_path
from flowrec.tune.data import TuneData
from flowrec.tune.forward import FlowerObjective, flower_losses, sft_losses

log = logging.getLogger(__name__)

METHODS = ("bigrec", "ifairlrs", "flower")
LOG_COLUMNS = ["step", "epoch", "loss", "sft_loss", "subtb_loss", "lr", "split"]


def _from_block(cls, block: dict, name: str, rename: dict[str, str] | None = None):
    rename = rename or {}
    block = {rename.get(k, k): v for k, v in block.items()}
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(block) - known)
    if unknown:
        raise ValueError(f"config block `{name}`: unknown key(s) {unknown}; expected {sorted(known)}")
    return cls(**block)


@dataclass
class TuneSettings:
    """The `tune:` config block (config/schema.yaml), shared by the three methods."""

    train_samples: int | None = None  # train samples used (a seeded random subset); None: all
    valid_samples: int | None = None  # valid samples for the validation loss; None: all
    epochs: int = 7  # maximum epochs
    batch_size: int = 128  # effective batch (gradient accumulation over micro batches)
    micro_batch_size: int = 8  # samples per forward pass
    learning_rate: float = 3e-4  # AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    warmup_ratio: float = 0.0  # share of steps with linear warm-up
    patience: int = 2  # early stopping patience in epochs (validation loss)
    seed: int = 42  # training seed

    @classmethod
    def from_config(cls, block: dict) -> "TuneSettings":
        return _from_block(cls, block, "tune")


@dataclass
class FlowerSettings:
    """The `flower:` config block; `lambda_` is the config key `lambda` (a Python keyword)."""

    lambda_: float = 0.005  # L = L_SFT + lambda * L_SubTB
    reward: str = "div"  # plain | div | add
    sample_temperature: float = 1.0  # on-policy sampling temperature

    @classmethod
    def from_config(cls, block: dict) -> "FlowerSettings":
        return _from_block(cls, block, "flower", {"lambda": "lambda_"})


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


def _rng_state(generator: torch.Generator) -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "sampler": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    generator.set_state(state["sampler"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save(obj: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def batch_losses(
    method: str, model, batch, objective: FlowerObjective | None, pad_id: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(SFT (B,), SubTB (B,)) per sample for `method`; SubTB is zero for the SFT methods."""
    if method in ("bigrec", "ifairlrs"):
        sft = sft_losses(model, batch)
        return sft, torch.zeros_like(sft)
    if method == "flower":
        if objective is None:
            raise ValueError("method flower needs a FlowerObjective (trie, reward variant, granularity)")
        return flower_losses(model, batch, objective, pad_id, generator)
    raise ValueError(f"unknown tuning method {method!r}; expected one of {METHODS}")


@torch.no_grad()
def validation_loss(model, data: TuneData, micro_batch_size: int, pad_id: int, device) -> float:
    """Mean per-sample SFT loss over `data` (sharded across ranks)."""
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


def write_log(rows: list[dict], path: Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def plot_losses(rows: list[dict], path: Path, title: str) -> None:
    """Loss curves: training SFT and total loss per step with the validation loss per epoch; SubTB apart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in rows if r["split"] == "train"]
    valid = [r for r in rows if r["split"] == "valid"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    steps = [r["step"] for r in train]
    axes[0].plot(steps, [r["sft_loss"] for r in train], label="train SFT", lw=1)
    axes[0].plot(steps, [r["loss"] for r in train], label="train total", lw=1, alpha=0.7)
    if valid:
        axes[0].plot([r["step"] for r in valid], [r["loss"] for r in valid], "o-", label="valid SFT")
    axes[0].set(xlabel="optimizer step", ylabel="loss", title=f"{title}: SFT loss")
    axes[0].legend()
    axes[1].plot(steps, [r["subtb_loss"] for r in train], color="C3", lw=1)
    axes[1].set(xlabel="optimizer step", ylabel="SubTB loss", title=f"{title}: SubTB loss (Flower only)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def train(
    model,
    method: str,
    train_data: TuneData,
    valid_data: TuneData,
    settings: TuneSettings,
    paths: TrainPaths,
    pad_id: int,
    flower: FlowerSettings | None = None,
    objective: FlowerObjective | None = None,
    on_checkpoint: Callable[[int], None] | None = None,
) -> TrainResult:
    """Fine-tune `model` in place with `method`; on return it holds the best epoch's weights.

    Resumes from paths.checkpoints/last.pt when it was written with the same method, settings and data.
    `on_checkpoint(epoch)` runs after each epoch's checkpoint (tests use it to interrupt a run).
    """
    if method not in METHODS:
        raise ValueError(f"unknown tuning method {method!r}; expected one of {METHODS}")
    if settings.batch_size % settings.micro_batch_size:
        raise ValueError(
            f"tune.batch_size ({settings.batch_size}) must be a multiple of tune.micro_batch_size ({settings.micro_batch_size})"
        )
    flower = flower or FlowerSettings()
    lam = flower.lambda_ if method == "flower" else 0.0
    rank, size = world()
    device = next(model.parameters()).device
    torch.manual_seed(settings.seed + rank)
    np.random.seed(settings.seed + rank)
    random.seed(settings.seed + rank)
    generator = torch.Generator(device=device).manual_seed(settings.seed + 1000 + rank)
    params = [p for p in model.parameters() if p.requires_grad]
    if size > 1:  # every rank starts from rank 0's weights
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, 0)
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(len(train_data) / settings.batch_size)
    total_steps = max(steps_per_epoch * settings.epochs, 1)
    warmup = int(settings.warmup_ratio * total_steps)

    def schedule(step: int) -> float:  # linear warm-up, then linear decay to zero
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(total_steps - warmup, 1))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    fingerprint = json.dumps(
        {
            "method": method,
            "tune": asdict(settings),
            "flower": asdict(flower) if method == "flower" else None,
            "granularity": objective.granularity if objective else None,
            "world_size": size,
            "n_train": len(train_data),
            "data": train_data.digest(),
            "valid": valid_data.digest(),
        },
        sort_keys=True,
    )
    result, step, bad_epochs, start_epoch = TrainResult(), 0, 0, 0
    last, best = paths.checkpoints / "last.pt", paths.checkpoints / "best.pt"
    if last.is_file():
        ckpt = torch.load(last, map_location=device, weights_only=False)
        if ckpt["fingerprint"] == fingerprint:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            _set_rng_state(ckpt["rng"][rank], generator)
            step, bad_epochs, start_epoch = ckpt["step"], ckpt["bad_epochs"], ckpt["epoch"] + 1
            result.rows, result.best_epoch, result.best_valid_loss = (
                ckpt["rows"],
                ckpt["best_epoch"],
                ckpt["best_valid_loss"],
            )
            result.resumed_from_epoch = ckpt["epoch"]
            if ckpt["stopped"]:
                start_epoch = settings.epochs
            log.info("resumed from %s after epoch %d (step %d)", last, ckpt["epoch"], step)
        else:
            log.warning("%s was written with other settings; starting afresh", last)
    model.train()
    for epoch in range(start_epoch, settings.epochs):
        order = np.random.default_rng([settings.seed, epoch]).permutation(len(train_data))
        bar = tqdm(
            range(steps_per_epoch), desc=f"{method} epoch {epoch + 1}/{settings.epochs}", disable=rank != 0
        )
        for b in bar:
            global_batch = order[b * settings.batch_size : (b + 1) * settings.batch_size]
            mine = global_batch[rank::size]
            sums = torch.zeros(3, dtype=torch.float64, device=device)
            for start in range(0, len(mine), settings.micro_batch_size):
                batch = train_data.batch(mine[start : start + settings.micro_batch_size], pad_id, device)
                sft, subtb = batch_losses(method, model, batch, objective, pad_id, generator)
                total = sft + lam * subtb  # (B,)
                (total.sum() / len(global_batch)).backward()
                sums += torch.stack([total.sum(), sft.sum(), subtb.sum()]).detach().double()
            _sync_gradients(params)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            loss, sft_mean, subtb_mean = (_all_sum(sums) / len(global_batch)).tolist()
            result.rows.append(
                dict(
                    step=step,
                    epoch=epoch,
                    loss=loss,
                    sft_loss=sft_mean,
                    subtb_loss=subtb_mean,
                    lr=lr,
                    split="train",
                )
            )
            bar.set_postfix(
                loss=f"{loss:.4f}", sft=f"{sft_mean:.4f}", subtb=f"{subtb_mean:.3f}", lr=f"{lr:.2e}"
            )
        valid = validation_loss(model, valid_data, settings.micro_batch_size, pad_id, device)
        result.rows.append(
            dict(
                step=step,
                epoch=epoch,
                loss=valid,
                sft_loss=valid,
                subtb_loss=math.nan,
                lr=math.nan,
                split="valid",
            )
        )
        improved = not (valid >= result.best_valid_loss) or result.best_epoch < 0
        if improved:
            result.best_epoch, result.best_valid_loss, bad_epochs = epoch, valid, 0
        else:
            bad_epochs += 1
        stopped = bad_epochs >= settings.patience
        log.info(
            "epoch %d: valid loss %.4f (best %.4f at epoch %d)",
            epoch,
            valid,
            result.best_valid_loss,
            result.best_epoch,
        )
        rng = [None] * size
        if size > 1:
            dist.all_gather_object(rng, _rng_state(generator))
        else:
            rng = [_rng_state(generator)]
        if rank == 0:
            if improved:
                _save({"model": model.state_dict(), "epoch": epoch}, best)
            _save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": rng,
                    "step": step,
                    "epoch": epoch,
                    "bad_epochs": bad_epochs,
                    "stopped": stopped,
                    "rows": result.rows,
                    "best_epoch": result.best_epoch,
                    "best_valid_loss": result.best_valid_loss,
                    "settings": asdict(settings),
                    "flower": asdict(flower),
                    "seed": settings.seed,
                    "fingerprint": fingerprint,
                },
                last,
            )
            write_log(result.rows, paths.log_csv)
        if size > 1:
            dist.barrier()
        result.epochs_run += 1
        if on_checkpoint is not None:
            on_checkpoint(epoch)
        if stopped:
            log.info("early stopping after epoch %d (patience %d)", epoch, settings.patience)
            break
    if best.is_file():
        model.load_state_dict(torch.load(best, map_location=device, weights_only=False)["model"])
    if rank == 0:
        write_log(result.rows, paths.log_csv)
        plot_losses(result.rows, paths.loss_png, method)
    return result

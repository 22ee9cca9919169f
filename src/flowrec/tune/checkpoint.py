"""Checkpoints of the training loop: last.pt (resume) and best.pt (best epoch).

last.pt is written every `tune.checkpoint_steps` optimizer steps and after every epoch. It holds the
weights, optimizer, scheduler, every rank's RNG states, the loop's progress (with the data position: the
epoch and the optimizer steps taken in it; an epoch's order is a function of (seed, epoch), so a resumed
run continues with the next batch of the same permutation), the settings and a fingerprint of what was trained (loss, settings, data, world size): a run resumes only
from a checkpoint with the same fingerprint, else it starts afresh. Everything is stored as tensors
and plain Python values, so it loads with torch.load(weights_only=True) (no pickled objects).
"""

import json
import logging
import math
import pickle
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from flowrec.distributed import world
from flowrec.io import atomic_path
from flowrec.tune.data import TuneData
from flowrec.tune.settings import TuneSettings

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """Where training stands: everything besides weights, optimizer and RNGs a resume needs."""

    step: int = 0  # optimizer steps taken
    epoch: int = -1  # last finished epoch
    epoch_step: int = 0  # optimizer steps taken in epoch `epoch + 1` (the data position)
    bad_epochs: int = 0  # epochs since the validation loss last improved
    stopped: bool = False  # early stopping triggered
    rows: list[dict] = field(default_factory=list)  # log.csv rows so far
    best_epoch: int = -1
    best_valid_loss: float = math.inf


def fingerprint(
    name: str,
    loss_settings: dict[str, Any],
    settings: TuneSettings,
    world_size: int,
    train_data: TuneData,
    valid_data: TuneData,
) -> str:
    """What a checkpoint must match to be resumed from (the data by content hash). How often the loop
    logs and checkpoints does not change the weights, so it may differ."""
    tune = {k: v for k, v in asdict(settings).items() if k not in ("log_steps", "checkpoint_steps")}
    return json.dumps(
        {
            "name": name,
            "loss": loss_settings,
            "tune": tune,
            "world_size": world_size,
            "n_train": len(train_data),
            "data": train_data.digest(),
            "valid": valid_data.digest(),
        },
        sort_keys=True,
    )


def rng_state(generator: torch.Generator) -> dict:
    """This process's RNG states as tensors and plain values (numpy's key array as a list)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
        "python": list(random.getstate()),
        "sampler": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    """Restore what rng_state stored."""
    torch.set_rng_state(state["torch"].cpu())
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    generator.set_state(state["sampler"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _save(obj: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


class Checkpoints:
    """last.pt and best.pt in `folder` (kept out of Snakemake's outputs so that they survive a rerun)."""

    def __init__(self, folder: Path, fingerprint: str, device: torch.device):
        self.last, self.best = Path(folder) / "last.pt", Path(folder) / "best.pt"
        self.fingerprint, self.device = fingerprint, device

    def resume(self, model, optimizer, scheduler, generator: torch.Generator) -> Progress | None:
        """Load last.pt into the model, optimizer, scheduler and RNGs when it matches; its Progress."""
        if not self.last.is_file():
            return None
        try:
            ckpt = torch.load(self.last, map_location=self.device, weights_only=True)
        except pickle.UnpicklingError:  # a checkpoint of the older format (pickled numpy RNG states)
            log.warning("%s holds pickled objects (an older format); starting afresh", self.last)
            return None
        if ckpt["fingerprint"] != self.fingerprint:
            log.warning("%s was written with other settings; starting afresh", self.last)
            return None
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"][world()[0]], generator)
        progress = Progress(**ckpt["progress"])
        if progress.epoch_step == 0:  # written at the end of an epoch
            log.info("resumed from %s after epoch %d (step %d)", self.last, progress.epoch, progress.step)
        else:  # written every tune.checkpoint_steps steps, mid-epoch
            log.info(
                "resumed from %s in epoch %d after %d of its steps (step %d)",
                self.last,
                progress.epoch + 1,
                progress.epoch_step,
                progress.step,
            )
        return progress

    def save(
        self,
        model,
        optimizer,
        scheduler,
        generator: torch.Generator,
        progress: Progress,
        improved: bool,
        settings: dict[str, Any],
    ) -> None:
        """Gather every rank's RNG states; rank 0 writes last.pt (and best.pt when `improved`)."""
        rank, size = world()
        rng = [None] * size
        if size > 1:
            dist.all_gather_object(rng, rng_state(generator))
        else:
            rng = [rng_state(generator)]
        if rank != 0:
            return
        if improved:
            _save({"model": model.state_dict(), "epoch": progress.epoch}, self.best)
        _save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng,
                "progress": asdict(progress),
                "settings": settings,
                "fingerprint": self.fingerprint,
            },
            self.last,
        )

    def restore_best(self, model) -> None:
        """Load best.pt's weights into `model`, when there is one."""
        if self.best.is_file():
            model.load_state_dict(torch.load(self.best, map_location=self.device, weights_only=True)["model"])

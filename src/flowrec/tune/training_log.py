"""The training loop's log.csv (one row per optimizer step and per validation), its loss.png, and the
progress lines of the rule log.

Columns: step, epoch, loss (the total), one `<part>_loss` per part of the loss (sft_loss and
subtb_loss for the three methods), lr, grad_norm (the global gradient norm before clipping), any
extra metrics of the trainer (trl's DPO/GRPO metrics, flowrec.distfit.trl), split (train or valid).
A validation row holds the validation SFT loss as loss and sft_loss, NaN for the other parts, the
learning rate and the gradient norm.
"""

import csv
import logging
import math
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pandas as pd

from flowrec.io import atomic_path

# Columns flowrec.report.plot_training_curves draws; a loss without such a part gets NaN (no curve).
PLOTTED_PARTS = ("sft", "subtb")


def log_columns(parts: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    """log.csv's columns for a loss with these parts (and a trainer's `extra` metrics)."""
    return ["step", "epoch", "loss", *(f"{part}_loss" for part in parts), "lr", "grad_norm", *extra, "split"]


def train_row(
    step: int, epoch: int, loss: float, parts: dict[str, float], lr: float, grad_norm: float
) -> dict:
    """The row of one optimizer step: the global batch's mean total loss and mean of every part."""
    values = {f"{p}_loss": v for p, v in parts.items()}
    return dict(step=step, epoch=epoch, loss=loss, **values, lr=lr, grad_norm=grad_norm, split="train")


def valid_row(step: int, epoch: int, valid: float, parts: Sequence[str]) -> dict:
    """The row of one validation: its loss is the SFT loss (NaN for every other part)."""
    values = {f"{p}_loss": valid if p == "sft" else math.nan for p in parts}
    return dict(step=step, epoch=epoch, loss=valid, **values, lr=math.nan, grad_norm=math.nan, split="valid")


def write_log(rows: list[dict], path: str | Path, columns: Sequence[str]) -> None:
    """log.csv, written atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def plot_log(rows: list[dict], path: str | Path, columns: Sequence[str], title: str) -> None:
    """loss.png: flowrec.report's training curves of these rows."""
    from flowrec.report import plot_training_curves  # matplotlib: only where a plot is drawn

    frame = pd.DataFrame(rows, columns=list(columns))
    for part in PLOTTED_PARTS:
        if f"{part}_loss" not in frame:
            frame[f"{part}_loss"] = float("nan")
    plot_training_curves(frame, path, title)


def progress_line(row: dict, parts: Sequence[str], total_steps: int) -> str:
    """`step 10/70 epoch 1: loss 2.3 (sft 2.2, subtb 18.1) lr 3.0e-04 grad norm 1.2` of a train row,
    followed by the row's extra metrics (a trainer's, beyond the log's standard columns)."""
    shown = ", ".join(f"{p} {row[f'{p}_loss']:.4g}" for p in parts)
    standard = set(log_columns(parts))
    extra = "".join(f", {k} {v:.4g}" for k, v in row.items() if k not in standard)
    return (
        f"step {row['step']}/{total_steps} epoch {row['epoch'] + 1}: loss {row['loss']:.4g}"
        f"{f' ({shown})' if shown else ''} lr {row['lr']:.3g} grad norm {row['grad_norm']:.4g}{extra}"
    )


class ProgressLog:
    """A line in the `flowrec` log (the rule's log file) every `every` optimizer steps and at the end of
    every epoch: the step's losses, lr, grad norm, samples/s since the last line and the ETA of the run
    at that rate. tqdm's bar goes to the console, which a SLURM job does not have; this goes to the log."""

    def __init__(
        self, logger: logging.Logger, every: int, total_steps: int, parts: Sequence[str], enabled: bool = True
    ):
        self.logger, self.every, self.total_steps, self.parts = logger, every, total_steps, tuple(parts)
        self.enabled = enabled  # False on every rank but 0 under torchrun: one line per step
        self._time, self._samples = time.perf_counter(), 0

    def step(self, row: dict, samples: int, end_of_epoch: bool) -> None:
        """Count the `samples` of optimizer step `row`; log a line when one is due."""
        self._samples += samples
        if not self.enabled or (row["step"] % self.every and not end_of_epoch):
            return
        now = time.perf_counter()
        rate = self._samples / max(now - self._time, 1e-9)
        steps_per_s = rate / max(samples, 1)
        eta = timedelta(seconds=round(max(self.total_steps - row["step"], 0) / max(steps_per_s, 1e-9)))
        line = progress_line(row, self.parts, self.total_steps)
        self.logger.info("%s, %.3g samples/s, ETA %s", line, rate, eta)
        self._time, self._samples = now, 0

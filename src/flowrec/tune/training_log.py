"""The training loop's log.csv (one row per optimizer step and per validation) and its loss.png.

Columns: step, epoch, loss (the total), one `<part>_loss` per part of the loss (sft_loss and
subtb_loss for the three methods), lr, split (train or valid). A validation row holds the validation
SFT loss as loss and sft_loss, NaN for the other parts and the learning rate.
"""

import csv
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from flowrec.io import atomic_path
from flowrec.report import plot_training_curves

# Columns flowrec.report.plot_training_curves draws; a loss without such a part gets NaN (no curve).
PLOTTED_PARTS = ("sft", "subtb")


def log_columns(parts: Sequence[str]) -> list[str]:
    """log.csv's columns for a loss with these parts."""
    return ["step", "epoch", "loss", *(f"{part}_loss" for part in parts), "lr", "split"]


def train_row(step: int, epoch: int, loss: float, parts: dict[str, float], lr: float) -> dict:
    """The row of one optimizer step: the global batch's mean total loss and mean of every part."""
    return dict(
        step=step, epoch=epoch, loss=loss, **{f"{p}_loss": v for p, v in parts.items()}, lr=lr, split="train"
    )


def valid_row(step: int, epoch: int, valid: float, parts: Sequence[str]) -> dict:
    """The row of one validation: its loss is the SFT loss (NaN for every other part)."""
    values = {f"{p}_loss": valid if p == "sft" else float("nan") for p in parts}
    return dict(step=step, epoch=epoch, loss=valid, **values, lr=float("nan"), split="valid")


def write_log(rows: list[dict], path: str | Path, columns: Sequence[str]) -> None:
    """log.csv, written atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def plot_log(rows: list[dict], path: str | Path, columns: Sequence[str], title: str) -> None:
    """loss.png: flowrec.report's training curves of these rows."""
    frame = pd.DataFrame(rows, columns=list(columns))
    for part in PLOTTED_PARTS:
        if f"{part}_loss" not in frame:
            frame[f"{part}_loss"] = float("nan")
    plot_training_curves(frame, path, title)

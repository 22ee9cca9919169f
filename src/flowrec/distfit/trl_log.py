"""trl's training metrics (DPO's reward margins, GRPO's rewards, the gradient norm, ...) into the
pipeline's log.csv rows and the rule log, through a transformers TrainerCallback.

A row per optimizer step in the columns of flowrec.tune.training_log (step, epoch, loss, sft_loss and
subtb_loss empty, lr, grad_norm, split) plus one column per trl metric, named as trl logs it with "/"
replaced by "_" (rewards/margins -> rewards_margins); a progress line every `log_steps` steps.
"""

from __future__ import annotations

import logging
import math

from transformers import TrainerCallback

from flowrec.tune.training_log import ProgressLog

log = logging.getLogger(__name__)

PARTS = ("sft", "subtb")  # the loop's parts: empty columns in trl's rows
# Trainer log keys that are no per-step metric (or are a standard column under another name).
NOT_METRICS = {"loss", "learning_rate", "grad_norm", "epoch", "step"}


class MetricsLog(TrainerCallback):
    """Collects a log.csv row from every Trainer log entry that holds a training loss (logging_steps=1:
    one per optimizer step) and logs a progress line every `log_steps` steps."""

    def __init__(self, steps_per_epoch: int, total_steps: int, samples_per_step: int, log_steps: int):
        self.steps_per_epoch, self.samples_per_step = max(steps_per_epoch, 1), samples_per_step
        self.rows: list[dict] = []
        self.metrics: list[str] = []  # extra columns, in order of first appearance
        self.progress = ProgressLog(log, log_steps, total_steps, ())

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:  # e.g. the summary entry at the end of training
            return
        step = int(state.global_step)
        row = dict(
            step=step,
            epoch=(step - 1) // self.steps_per_epoch,
            loss=float(logs["loss"]),
            sft_loss=math.nan,
            subtb_loss=math.nan,
            lr=float(logs.get("learning_rate", math.nan)),
            grad_norm=float(logs.get("grad_norm", math.nan)),
        )
        for key, value in logs.items():
            if key in NOT_METRICS or not isinstance(value, int | float):
                continue
            name = key.replace("/", "_")
            if name not in self.metrics:
                self.metrics.append(name)
            row[name] = float(value)
        self.rows.append({**row, "split": "train"})
        end_of_epoch = step % self.steps_per_epoch == 0
        self.progress.step(row, self.samples_per_step, end_of_epoch)

"""Evaluation of the test split during tuning (the paper's Fig. 5; docs/method.md section 11).

Every `tune.eval_every_steps` optimizer steps (after steps 1, 1 + N, 1 + 2N, ..., as the published
code's counter that starts at -1) and at the end of every epoch, the model being trained decodes the
seeded test subset with the final evaluation's decoder (flowrec.decode.search.constrained_beam_search
and its predictions table) and is scored by the final evaluation's metrics
(flowrec.metrics.evaluate_prediction_files). Each evaluation is a row of the curve eval.csv, beside
log.csv. Model selection does not read it: early stopping and the saved weights stay on validation.
"""

import contextlib
import csv
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from flowrec.decode.predictions import predictions_table
from flowrec.decode.run import DecodeSettings
from flowrec.decode.search import constrained_beam_search
from flowrec.io import atomic_path, read_items, write_parquet
from flowrec.metrics import MetricsSettings, evaluate_prediction_files
from flowrec.prompts import prompt_ids_batch
from flowrec.subsets import seeded_subset
from flowrec.trie import Trie

log = logging.getLogger(__name__)

# Columns of eval.csv before the metrics: the optimizer step, the epoch it fell in, and why it was
# taken (`step`: every eval_every_steps steps; `epoch`: an epoch's end, after its validation).
KEY_COLUMNS = ("step", "epoch", "point")


@dataclass
class TestFiles:
    """The files the final evaluation scores with (rules decode and evaluate_method)."""

    test: str  # data/test.parquet
    items: str  # data/items.parquet
    groups: str  # trie/groups.parquet
    groups_json: str  # trie/groups.json


@dataclass
class PeriodicEval:
    """The test decodes of one tuning run and their curve (rows of eval.csv)."""

    every_steps: int | None  # None: only at the end of every epoch
    prompts: list[list[int]]  # prompt ids of the decoded test samples
    samples: np.ndarray  # their test rows
    trie: Trie
    decode: DecodeSettings
    metrics: MetricsSettings
    files: TestFiles
    csv_path: Path
    pad_id: int
    rows: list[dict] = field(default_factory=list)

    def due(self, step: int) -> bool:
        """Whether optimizer step `step` (1-based) is followed by an evaluation."""
        return self.every_steps is not None and (step - 1) % self.every_steps == 0

    def resume(self, step: int) -> None:
        """Keep the curve's rows up to optimizer step `step` (a resumed run's checkpoint): they were
        taken on the weights the run resumes from or before, and are not decoded again."""
        if not self.csv_path.is_file() or step <= 0:
            self.rows = []
            return
        frame = pd.read_csv(self.csv_path)
        self.rows = frame[frame["step"] <= step].to_dict("records")

    @torch.no_grad()
    def __call__(self, model, step: int, epoch: int, point: str, autocast=None) -> dict:
        """Decode and score the test subset with `model` as it is now; append a row and rewrite eval.csv."""
        was_training = model.training
        model.eval()
        try:
            with autocast() if autocast is not None else contextlib.nullcontext():
                ranked = constrained_beam_search(
                    model,
                    self.prompts,
                    self.trie,
                    num_beams=self.decode.num_beams,
                    num_return=self.decode.num_return,
                    batch_size=self.decode.batch_size,
                    temperature=self.decode.temperature,
                    length_normalise=self.decode.length_normalise,
                    pad_token_id=self.pad_id,
                )
        finally:
            model.train(was_training)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "predictions.parquet"
            write_parquet(predictions_table(self.samples, ranked, self.trie), path)
            scores = evaluate_prediction_files(
                path,
                self.files.test,
                self.files.items,
                self.files.groups,
                self.files.groups_json,
                self.metrics,
                self.decode.num_return,
            )
        row = {"step": step, "epoch": epoch, "point": point}
        row.update({k: float(v) for k, v in scores.items() if isinstance(v, int | float)})
        self.rows.append(row)
        write_curve(self.rows, self.csv_path)
        log.info("test evaluation at step %d (%s): %s", step, point, {k: row[k] for k in list(row)[3:9]})
        return row


def write_curve(rows: Sequence[dict], path: str | Path) -> None:
    """eval.csv (the key columns, then every scalar metric), written atomically; a header-only file
    when there are no rows."""
    metrics = list(dict.fromkeys(k for row in rows for k in row if k not in KEY_COLUMNS))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*KEY_COLUMNS, *metrics])
        writer.writeheader()
        writer.writerows(rows)


def make_periodic_eval(
    every_steps: int | None,
    test_samples: int | None,
    decode: DecodeSettings,
    metrics: MetricsSettings,
    files: TestFiles,
    csv_path: str | Path,
    trie: Trie,
    tokenizer,
    max_history: int,
    style: str,
    noun: str,
) -> PeriodicEval:
    """A PeriodicEval of the seeded test subset: `test_samples` rows drawn with decode.seed, or, when
    None, decode.test_samples, the subset the final evaluation decodes (so that an evaluation of the
    final weights gives the final metrics)."""
    item_titles = read_items(files.items, columns=["item_id", "title"])["title"].tolist()
    test = pd.read_parquet(files.test, columns=["history"])
    size = test_samples if test_samples is not None else decode.test_samples
    samples = seeded_subset(len(test), size, decode.seed)
    histories = [[item_titles[i] for i in h] for h in test["history"].iloc[samples]]
    prompts = prompt_ids_batch(tokenizer, histories, max_history, style, noun)
    return PeriodicEval(
        every_steps, prompts, samples, trie, decode, metrics, files, Path(csv_path), tokenizer.pad_token_id
    )

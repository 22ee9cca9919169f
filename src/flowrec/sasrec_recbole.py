"""SASRec trained with RecBole 1.2.1 on the canonical split (docs/method.md section 5).

RecBole reads the split from atomic files (flowrec.recbole_inputs) and renumbers item tokens itself
(id 0 is its padding). We keep the mapping explicit: `recbole_id[j]` is RecBole's id of our item_id j,
and every score leaves this module in our order (column j = item_id j, no padding column).

Kept away from RecBole on purpose: `recbole.quick_start` (imports ray), its evaluator (`np.float`, gone
in numpy >= 1.24), its checkpoint files (its reload trips torch.load's weights_only default) and its
TensorBoard folder in the working directory. Model selection uses our own full-ranking NDCG@10 on valid.
"""

from __future__ import annotations

import copy
import logging
import re
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from recbole.data import create_dataset, data_preparation
from recbole.model.sequential_recommender.sasrec import SASRec
from recbole.trainer import Trainer
from recbole.trainer import trainer as recbole_trainer
from recbole.utils import init_seed

from flowrec.io import atomic_path, write_json, write_parquet
from flowrec.recbole_inputs import SPLITS, recbole_config, write_atomic_files
from flowrec.sasrec import (
    SasrecSettings,
    SplitArrays,
    TitleIndex,
    export_p_ui,
    ranking_metrics,
    read_split,
    split_ranks,
    top_titles,
)

# Importing any RecBole sequential model runs recbole/model/sequential_recommender/sine.py, which turns
# autograd anomaly detection on for the whole process (slow, and it turns a NaN loss into an error
# inside backward); switch it back off.
torch.autograd.set_detect_anomaly(False)

log = logging.getLogger("flowrec.sasrec")

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class SASRecBCE(SASRec):
    """SASRec with the original paper's loss: binary cross-entropy on the target and one sampled negative.

    RecBole's SASRec offers BPR and CE only; it is built with loss_type BPR (so that the data loader
    samples one negative per sample) and the loss is replaced here:
    L = -log sigmoid(s(u, i+)) - log(1 - sigmoid(s(u, i-))).
    """

    def calculate_loss(self, interaction):
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])  # (B, H)
        pos = (seq_output * self.item_embedding(interaction[self.POS_ITEM_ID])).sum(-1)  # (B,)
        neg = (seq_output * self.item_embedding(interaction[self.NEG_ITEM_ID])).sum(-1)  # (B,)
        return F.binary_cross_entropy_with_logits(
            torch.cat([pos, neg]), torch.cat([torch.ones_like(pos), torch.zeros_like(neg)])
        )


@dataclass
class TrainedSasrec:
    """A trained model with the item-id mapping; `scores` is a `flowrec.sasrec.ScoreFn`."""

    model: SASRec
    recbole_id: torch.Tensor  # (n_items,) RecBole's id of our item_id j
    settings: SasrecSettings
    best_epoch: int
    epochs_run: int
    best_valid_ndcg10: float
    train_seconds: float

    @torch.no_grad()
    def scores(self, history: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        """(B, L) our item ids (-1 padding), (B,) lengths -> (B, n_items) logits, column j = item_id j."""
        self.model.eval()
        seq = torch.where(history >= 0, self.recbole_id[history.clamp(min=0)], 0)  # RecBole pads with 0
        width = self.model.max_seq_length
        if seq.shape[1] < width:
            seq = F.pad(seq, (0, width - seq.shape[1]))
        if seq.shape[1] > width:
            raise ValueError(f"history of {seq.shape[1]} items; the model was built for at most {width}")
        seq_output = self.model.forward(seq, length)  # (B, H)
        return seq_output @ self.model.item_embedding.weight[self.recbole_id].T  # (B, n_items)

    def save(self, path: str | Path) -> None:
        """State dict plus everything needed to rebuild it; plain tensors and dicts (weights_only-safe)."""
        state = {
            "state_dict": self.model.state_dict(),
            "recbole_id": self.recbole_id,
            "settings": asdict(self.settings),
            "max_seq_length": int(self.model.max_seq_length),
            "n_recbole_items": int(self.model.n_items),
            "best_epoch": self.best_epoch,
            "best_valid_ndcg10": self.best_valid_ndcg10,
        }
        with atomic_path(path) as tmp:
            torch.save(state, tmp)


class _NoTensorBoard:
    """Stands in for RecBole's SummaryWriter (it would create ./log_tensorboard wherever we run)."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


class _StripColours(logging.Filter):
    """RecBole colours its log lines with ANSI codes; the rule's log file gets plain text."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = _ANSI.sub("", record.getMessage())
        record.args = None
        return True


@contextmanager
def _recbole_logging():
    # RecBole logs to the root logger; flowrec.logs.log_to gave it the rule's handlers.
    handlers = list(logging.getLogger().handlers)
    strip = _StripColours()
    for handler in handlers:
        handler.addFilter(strip)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(strip)


class SelectOnValid(Trainer):
    """RecBole's Trainer (loop, optimiser, early stopping, per-epoch logs) with our model selection.

    Validation is our full-ranking NDCG@10 over all items; the best weights stay in memory (no
    checkpoint file to reload, so nothing goes through torch.load).
    """

    def __init__(self, config, model, valid: SplitArrays, scorer: TrainedSasrec):
        super().__init__(config, model)
        self.valid_split = valid
        self.scorer = scorer
        self.best_state: dict | None = None
        self.best_epoch = -1
        self.epochs_run = 0

    def _valid_epoch(self, valid_data, show_progress=False):
        ranks = split_ranks(self.scorer.scores, self.valid_split, batch_size=self.test_batch_size)
        result = ranking_metrics(ranks, ks=(10,))
        self.epochs_run += 1
        self.model.train()
        return result["NDCG@10"], {"ndcg@10": result["NDCG@10"], "hit@10": result["HR@10"]}

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        self.best_state = copy.deepcopy(self.model.state_dict())
        self.best_epoch = epoch
        if verbose:
            self.logger.info(f"best valid NDCG@10 so far at epoch {epoch}: weights kept in memory")


def train_sasrec(
    splits: dict[str, SplitArrays],
    n_items: int,
    settings: SasrecSettings,
    threads: int = 1,
    model_class: type | None = None,
    model_keys: dict | None = None,
) -> TrainedSasrec:
    """Train SASRec on `splits` (train/valid/test) with RecBole; best epoch by valid NDCG@10.

    Another RecBole sequential model whose forward takes (item_seq, item_seq_len) trains the same way
    with `model_class` and its architecture keys `model_keys` (flowrec.afl.recmodels: GRU4Rec, Caser).

    Same seed and thread count -> same model on CPU (RecBole's init_seed with reproducibility on, its
    data loader's seeded generator).
    """
    missing = [s for s in SPLITS if s not in splits]
    if missing:
        raise ValueError(f"train_sasrec: missing split(s) {missing}")
    if len(splits["valid"]) == 0 or len(splits["train"]) == 0:
        raise ValueError("train_sasrec: the train and valid splits must not be empty")
    torch.set_num_threads(threads)
    max_len = max(s.history.shape[1] for s in splits.values())
    name = "flowrec"
    start = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="flowrec-recbole-") as tmp,
        _recbole_logging(),
        warnings.catch_warnings(),
    ):
        # RecBole 1.2.1 under pandas 2.x / torch 2.x raises FutureWarnings about its own calls
        # (chained fillna(inplace=True), Series.agg(len), torch.cuda.amp.GradScaler); they change
        # nothing with the pinned versions and would bury the training log.
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole\.")
        root = Path(tmp)
        write_atomic_files(splits, n_items, root / name, name)
        config = recbole_config(settings, root, name, max_len, model_class or SASRec, model_keys)
        init_seed(settings.seed, reproducibility=True)
        dataset = create_dataset(config)
        log.info("RecBole dataset: %s", str(dataset).replace("\n", " | "))
        train_data, valid_data, _test_data = data_preparation(config, dataset)

        tokens = np.asarray(dataset.field2id_token["item_id"])  # index = RecBole id, [0] = "[PAD]"
        ours = tokens[1:].astype(np.int64)
        if not np.array_equal(np.sort(ours), np.arange(n_items)):
            raise RuntimeError(f"RecBole item vocabulary does not match item ids 0..{n_items - 1}")
        recbole_id = np.empty(n_items, dtype=np.int64)
        recbole_id[ours] = np.arange(1, len(tokens))

        init_seed(settings.seed, reproducibility=True)
        model_class = model_class or (SASRecBCE if settings.loss == "BCE" else SASRec)
        model = model_class(config, train_data.dataset).to(config["device"])
        log.info("%s", model)
        trained = TrainedSasrec(
            model=model,
            recbole_id=torch.from_numpy(recbole_id),
            settings=settings,
            best_epoch=-1,
            epochs_run=0,
            best_valid_ndcg10=float("nan"),
            train_seconds=0.0,
        )
        with mock.patch.object(recbole_trainer, "get_tensorboard", lambda logger: _NoTensorBoard()):
            trainer = SelectOnValid(config, model, splits["valid"], trained)
        best_score, _ = trainer.fit(train_data, valid_data=valid_data, saved=True, show_progress=False)
    if trainer.best_state is None:
        raise RuntimeError("SASRec training finished without a validated epoch")
    model.load_state_dict(trainer.best_state)
    model.eval()
    trained.best_epoch = trainer.best_epoch
    trained.epochs_run = trainer.epochs_run
    trained.best_valid_ndcg10 = float(best_score)
    trained.train_seconds = time.perf_counter() - start
    log.info(
        "SASRec: best valid NDCG@10 %.4f at epoch %d of %d (%.1f s)",
        trained.best_valid_ndcg10,
        trained.best_epoch,
        trained.epochs_run,
        trained.train_seconds,
    )
    return trained


def train_and_export(
    items_path: str | Path,
    split_paths: dict[str, str | Path],
    settings: SasrecSettings,
    threads: int,
    model_path: str | Path,
    metrics_path: str | Path,
    p_ui_paths: dict[str, str | Path],
    predictions_path: str | Path,
    top_k: int = 10,
) -> dict:
    """The SASRec stage: train on the canonical split, write model, p_ui per split, metrics, top-k.

    metrics.json: item-level HR/NDCG@{5,10} of valid and test (full ranking over all items), the
    title-level test figures of the top-k list, the best epoch and the training time.
    """
    index = TitleIndex.read(items_path)
    n_items = len(index.item_title)
    splits = {name: read_split(split_paths[name], n_items) for name in SPLITS}
    log.info("SASRec data: %d items, %s samples", n_items, {k: len(v) for k, v in splits.items()})
    trained = train_sasrec(splits, n_items, settings, threads)
    trained.save(model_path)

    metrics: dict = {}
    for name in SPLITS:
        ranks = export_p_ui(trained.scores, splits[name], n_items, p_ui_paths[name], settings.batch_size)
        if name != "train":
            metrics[name] = ranking_metrics(ranks)
            log.info("SASRec %s (item level, all items ranked): %s", name, metrics[name])
    table, title_ranks = top_titles(trained.scores, splits["test"], index, top_k, settings.batch_size)
    write_parquet(table, predictions_path)
    metrics["test_titles"] = ranking_metrics(title_ranks)
    metrics.update(
        best_epoch=trained.best_epoch,
        epochs_run=trained.epochs_run,
        train_seconds=round(trained.train_seconds, 2),
        n_items=n_items,
        settings=asdict(settings),
    )
    write_json(metrics, metrics_path)
    return metrics

"""GRU4Rec and Caser in RecBole beside our SASRec: AFL's other recommendation models (docs/method.md
section 9).

Same atomic files, split and model selection as SASRec (flowrec.sasrec_recbole.train_sasrec: our
full-ranking valid NDCG@10, best weights kept in memory, nothing through recbole.quick_start or
torch.load). Both train with the CE loss over all items.

Caser has a user embedding. Our RecBole "users" are samples (one session per sample, flowrec.
recbole_inputs), and a test sample's session is never seen in training, so a per-session embedding
could not carry over; `SessionCaser` feeds every sample RecBole's padding user (id 0), whose embedding
RecBole fixes at zero: Caser without its user term (its convolutions over the sequence unchanged).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from recbole.model.sequential_recommender.caser import Caser
from recbole.model.sequential_recommender.gru4rec import GRU4Rec

from flowrec.io import write_json
from flowrec.recbole_inputs import SPLITS
from flowrec.sasrec import TitleIndex, export_p_ui, ranking_metrics, read_split
from flowrec.sasrec_recbole import train_sasrec

# Importing any RecBole sequential model runs recbole/model/sequential_recommender/sine.py, which turns
# autograd anomaly detection on for the whole process (slow, and it turns a NaN loss into an error
# inside backward); switch it back off.
torch.autograd.set_detect_anomaly(False)

REC_MODELS = ("gru4rec", "caser")


@dataclass(frozen=True)
class RecModelSettings:
    """An `afl.gru4rec` / `afl.caser` config block (defaults and help: config/schema.yaml)."""

    embedding_size: int
    hidden_size: int  # GRU4Rec: GRU hidden size
    num_layers: int  # GRU4Rec: GRU layers
    n_h: int  # Caser: horizontal filters per height
    n_v: int  # Caser: vertical filters
    reg_weight: float  # Caser: L2 weight
    dropout: float
    learning_rate: float
    weight_decay: float
    batch_size: int
    epochs: int
    patience: int
    seed: int

    @property
    def loss(self) -> str:
        """Read by the shared RecBole config (flowrec.recbole_inputs): both models train with CE."""
        return "CE"


class SessionCaser(Caser):
    """RecBole's Caser with SASRec's forward signature and the padding user for every sample."""

    def forward(self, item_seq, item_seq_len):  # noqa: ARG002 (Caser reads the whole padded window)
        user = torch.zeros(item_seq.shape[0], dtype=torch.long, device=item_seq.device)
        return super().forward(user, item_seq)

    def calculate_loss(self, interaction):
        # RecBole's Caser CE loss, with our forward.
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        logits = seq_output @ self.item_embedding.weight.T
        loss = self.loss_fct(logits, interaction[self.POS_ITEM_ID])
        reg = self.reg_loss(
            [
                self.user_embedding.weight,
                self.item_embedding.weight,
                self.conv_v.weight,
                self.fc1.weight,
                self.fc2.weight,
            ]
        )
        return loss + self.reg_weight * reg + self.reg_loss_conv_h()


def model_spec(name: str, s: RecModelSettings) -> tuple[type, dict]:
    """RecBole class and architecture keys of `name`."""
    if name == "gru4rec":
        keys = {"embedding_size": s.embedding_size, "hidden_size": s.hidden_size, "num_layers": s.num_layers}
        return GRU4Rec, {**keys, "dropout_prob": s.dropout}
    if name == "caser":
        keys = {"embedding_size": s.embedding_size, "nh": s.n_h, "nv": s.n_v, "reg_weight": s.reg_weight}
        return SessionCaser, {**keys, "dropout_prob": s.dropout}
    raise ValueError(f"unknown recommendation model {name!r}; expected one of {REC_MODELS}")


def train_and_export(
    name: str,
    settings: RecModelSettings,
    items_path: str | Path,
    split_paths: dict[str, str | Path],
    threads: int,
    model_path: str | Path,
    p_ui_test_path: str | Path,
    metrics_path: str | Path,
) -> dict:
    """Train `name` on the canonical split; write the model, p_ui of the test split and metrics."""
    n_items = len(TitleIndex.read(items_path).item_title)
    splits = {split: read_split(split_paths[split], n_items) for split in SPLITS}
    model_class, keys = model_spec(name, settings)
    trained = train_sasrec(splits, n_items, settings, threads, model_class=model_class, model_keys=keys)
    trained.save(model_path)
    ranks = export_p_ui(trained.scores, splits["test"], n_items, p_ui_test_path, settings.batch_size)
    metrics = {
        "model": name,
        "test": ranking_metrics(ranks),
        "best_epoch": trained.best_epoch,
        "best_valid_ndcg10": trained.best_valid_ndcg10,
        "epochs_run": trained.epochs_run,
        "train_seconds": round(trained.train_seconds, 2),
        "settings": asdict(settings),
    }
    write_json(metrics, metrics_path)
    return metrics

"""What RecBole reads to train SASRec: atomic files of the canonical split and its Config.

RecBole reads pre-split sequential data from atomic files `{name}.{train,valid,test}.inter` (one row per
sample: `item_id_list` = history, `item_id` = target) and an item file; its Config mirrors our
`sasrec:` settings (flowrec.sasrec.SasrecSettings). Training itself is flowrec.sasrec_recbole.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch
from recbole.config import Config
from recbole.model.sequential_recommender.sasrec import SASRec

from flowrec.sasrec import SasrecSettings, SplitArrays

# Importing any RecBole sequential model runs recbole/model/sequential_recommender/sine.py, which turns
# autograd anomaly detection on for the whole process (slow, and it turns a NaN loss into an error
# inside backward); switch it back off.
torch.autograd.set_detect_anomaly(False)

SPLITS = ("train", "valid", "test")


def write_atomic_files(splits: dict[str, SplitArrays], n_items: int, folder: Path, name: str) -> None:
    """RecBole atomic files for pre-split sequential data, plus `{name}.item` listing every item id.

    The item file puts all n_items ids in RecBole's vocabulary even if some never occur in a split, so
    p_ui always has one column per item.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for split_name, split in splits.items():
        # One space-separated history string per sample ("3 17 5"): rows are left-aligned, so the
        # row-major cells >= 0 are the histories back to back.
        offsets = np.concatenate([[0], np.cumsum(split.length)]).astype(np.int32)
        values = pa.array(split.history[split.history >= 0].astype(str))
        history = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), values), " ")
        frame = pd.DataFrame(
            {
                "session_id:token": np.char.add(split_name, np.arange(len(split)).astype(str)),
                "item_id_list:token_seq": history.to_numpy(zero_copy_only=False),
                "item_id:token": split.target.astype(str),
            }
        )
        frame.to_csv(folder / f"{name}.{split_name}.inter", sep="\t", index=False)
    pd.DataFrame({"item_id:token": np.arange(n_items).astype(str)}).to_csv(
        folder / f"{name}.item", sep="\t", index=False
    )


def recbole_config(
    settings: SasrecSettings,
    data_root: Path,
    name: str,
    max_len: int,
    model_class: type = SASRec,
    model_keys: dict | None = None,
) -> Config:
    """RecBole Config for pre-split sequential data on CPU, mirroring `settings`.

    Another sequential model (flowrec.afl.recmodels: GRU4Rec, Caser) passes its class and its own
    architecture keys as `model_keys`, which replace SASRec's; the training keys come from `settings`.
    """
    bce = settings.loss == "BCE"
    architecture = (
        model_keys
        if model_keys is not None
        else {
            "hidden_size": settings.hidden_size,
            "n_layers": settings.n_layers,
            "n_heads": settings.n_heads,
            "inner_size": settings.inner_size,
            "hidden_dropout_prob": settings.dropout,
            "attn_dropout_prob": settings.dropout,
        }
    )
    config_dict = {
        "data_path": str(data_root),
        "checkpoint_dir": str(data_root / "saved"),
        "benchmark_filename": list(SPLITS),
        "USER_ID_FIELD": "session_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": None,
        "RATING_FIELD": None,
        "load_col": {"inter": ["session_id", "item_id_list", "item_id"], "item": ["item_id"]},
        "alias_of_item_id": ["item_id_list"],
        "MAX_ITEM_LIST_LENGTH": max_len,
        "eval_args": {"order": "TO", "mode": "full", "group_by": "user", "split": None},
        "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1} if bce else None,
        "loss_type": "BPR" if bce else "CE",
        **architecture,
        "learning_rate": settings.learning_rate,
        "weight_decay": settings.weight_decay,
        "train_batch_size": settings.batch_size,
        "eval_batch_size": settings.batch_size,
        "epochs": settings.epochs,
        # RecBole stops when more than `stopping_step` evaluations in a row fail to improve.
        "stopping_step": settings.patience - 1,
        "seed": settings.seed,
        "reproducibility": True,
        "metrics": ["Hit", "NDCG"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "use_gpu": False,
        "gpu_id": "",
        "show_progress": False,
        "log_wandb": False,
        "worker": 0,
    }
    # Config sets CUDA_VISIBLE_DEVICES from gpu_id for the whole process; put the caller's back. It also
    # reads `--key=value` words of sys.argv as settings: hide the caller's command line (pytest, a bench).
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        with mock.patch.object(sys, "argv", sys.argv[:1]):
            return Config(model=model_class, dataset=name, config_dict=config_dict)
    finally:
        if saved is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved

"""One tuning job end to end (load, build tensors, train, save), in one process or under torchrun.

`python -m flowrec.tune.run job.json` is the torchrun target: with WORLD_SIZE > 1 it joins the process
group (gloo on CPU, nccl on CUDA, one GPU per local rank) and every rank trains on its slice of each
global batch; rank 0 writes the outputs. `launch(job, nproc)` runs the job in this process when
nproc is 1, else under `torch.distributed.run --standalone` on this machine.
"""

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from flowrec.distributed import job_main, launch_job, process_device, world
from flowrec.model import ModelSettings, load_base_model, load_tokenizer, save_tuned
from flowrec.subsets import seeded_subset
from flowrec.trie import Trie
from flowrec.tune.data import build_tune_data, group_weights
from flowrec.tune.forward import FlowerObjective
from flowrec.tune.loop import METHODS, FlowerSettings, TrainPaths, TuneSettings, train

log = logging.getLogger(__name__)


@dataclass
class TuneJob:
    """Everything one tuning rule needs: input and output paths and its config blocks."""

    method: str
    data_dir: str  # results/{dataset}/data (items, train, valid parquet)
    trie: str  # results/{dataset}/trie/trie.npz
    model_dir: str  # output: flowrec.model.save_tuned folder
    log_csv: str
    loss_png: str
    checkpoints: str
    model: dict
    prompt: dict
    tune: dict
    flower: dict | None = None
    granularity: int = 1
    groups: str | None = None  # groups.parquet (IFairLRS)
    groups_json: str | None = None  # groups.json (IFairLRS)
    p_ui_train: str | None = None  # sasrec/p_ui_train.npy (Flower)
    device: str | None = None  # default: cuda:{LOCAL_RANK} when CUDA is available, else cpu


def run_job(job: TuneJob) -> dict:
    """Train `job.method` and (rank 0) save the model; returns a summary for the log."""
    if job.method not in METHODS:
        raise ValueError(f"unknown tuning method {job.method!r}; expected one of {METHODS}")
    settings = TuneSettings.from_config(job.tune)
    model_settings = ModelSettings.from_config(job.model)
    flower = FlowerSettings.from_config(job.flower or {})
    max_history = int(job.prompt.get("max_history", 10))
    device = process_device(job.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    data = Path(job.data_dir)
    items = pd.read_parquet(data / "items.parquet").sort_values("item_id")
    if not np.array_equal(items["item_id"].to_numpy(), np.arange(len(items))):
        raise ValueError(f"{data / 'items.parquet'}: item_id must be 0..N-1")
    item_titles = items["title"].tolist()
    train_split = pd.read_parquet(data / "train.parquet")
    valid_split = pd.read_parquet(data / "valid.parquet")
    trie = Trie.load(job.trie)
    tokenizer = load_tokenizer(model_settings.name_or_path)
    weights = None
    if job.method == "ifairlrs":
        shares = json.loads(Path(job.groups_json).read_text())["shares"]
        weights = group_weights(train_split, trie, pd.read_parquet(job.groups), shares)
    train_rows = seeded_subset(len(train_split), settings.train_samples, settings.seed)
    valid_rows = seeded_subset(len(valid_split), settings.valid_samples, settings.seed)
    p_ui = job.p_ui_train if job.method == "flower" and flower.reward != "plain" else None
    train_data = build_tune_data(
        train_split, train_rows, item_titles, tokenizer, trie, max_history, weights, p_ui
    )
    valid_data = build_tune_data(valid_split, valid_rows, item_titles, tokenizer, trie, max_history)
    log.info(
        "%s: %d train / %d valid samples, device %s, world %d",
        job.method,
        len(train_data),
        len(valid_data),
        device,
        world()[1],
    )
    model = load_base_model(model_settings.name_or_path, model_settings.lora_settings(), device=device)
    objective = None
    if job.method == "flower":
        objective = FlowerObjective(trie, flower.reward, flower.sample_temperature, job.granularity)
    paths = TrainPaths(Path(job.checkpoints), Path(job.log_csv), Path(job.loss_png))
    result = train(
        model, job.method, train_data, valid_data, settings, paths, tokenizer.pad_token_id, flower, objective
    )
    if world()[0] == 0:
        save_tuned(model, tokenizer, job.model_dir, model_settings.name_or_path)
        # Checkpoints serve only a rerun of an interrupted job; a finished one must train afresh
        # when forced (--forcerun), not "resume" past its last epoch.
        for name in ("last.pt", "best.pt"):
            (Path(job.checkpoints) / name).unlink(missing_ok=True)
    return {
        "best_epoch": result.best_epoch,
        "best_valid_loss": result.best_valid_loss,
        "epochs_run": result.epochs_run,
    }


def _log_summary(summary: dict) -> None:
    log.info("summary: %s", summary)


def launch(job: TuneJob, nproc: int = 1) -> None:
    """Run `job` here (nproc 1) or as `nproc` torchrun processes on this machine."""
    launch_job(job, run_job, _log_summary, "flowrec.tune.run", Path(job.checkpoints) / "job.json", nproc)


if __name__ == "__main__":  # the torchrun target
    job_main(sys.argv[1:], "flowrec.tune.run", TuneJob, run_job, _log_summary)

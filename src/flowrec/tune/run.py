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

import pandas as pd
import torch

from flowrec.distributed import job_main, launch_job, process_device, world
from flowrec.io import read_items
from flowrec.model import ModelSettings, load_base_model, load_tokenizer, save_tuned
from flowrec.prompts import PromptSettings
from flowrec.settings import settings_from_block
from flowrec.subsets import seeded_subset
from flowrec.trie import Trie
from flowrec.tune.data import build_tune_data, group_weights
from flowrec.tune.loop import TrainPaths, train
from flowrec.tune.objectives import make_loss
from flowrec.tune.settings import TuneSettings

log = logging.getLogger(__name__)


@dataclass
class TuneJob:
    """Everything one tuning job needs: input and output paths and its config blocks.

    A method's own inputs select its data: `groups` and `groups_json` weight the samples (IFairLRS),
    `p_ui_train` holds the SASRec scores of Flower's div and add rewards.
    """

    method: str  # bigrec | ifairlrs | flower (flowrec.tune.objectives.LOSSES)
    items: str  # data/items.parquet
    train: str  # data/train.parquet
    valid: str  # data/valid.parquet
    trie: str  # trie/trie.npz
    model_dir: str  # output: flowrec.model.save_tuned folder
    log_csv: str
    loss_png: str
    checkpoints: str
    model: dict
    prompt: dict
    tune: dict
    flower: dict | None = None  # the `flower:` block (Flower only)
    granularity: int = 1  # trie.granularity (Flower's SubTB states)
    groups: str | None = None  # trie/groups.parquet (IFairLRS)
    groups_json: str | None = None  # trie/groups.json (IFairLRS)
    p_ui_train: str | None = None  # sasrec/p_ui_train.npy (Flower)
    device: str | None = None  # default: cuda:{LOCAL_RANK} when CUDA is available, else cpu


def _sample_weights(job: TuneJob, train_split: pd.DataFrame, trie: Trie):
    """IFairLRS's group weights of every train sample when the job has the groups, else None."""
    if job.groups is None and job.groups_json is None:
        return None
    if job.groups is None or job.groups_json is None:
        raise ValueError("tuning job: groups and groups_json come together (IFairLRS sample weights)")
    shares = json.loads(Path(job.groups_json).read_text())["shares"]
    return group_weights(train_split, trie, pd.read_parquet(job.groups), shares)


def run_job(job: TuneJob) -> dict:
    """Train `job.method` and (rank 0) save the model; returns a summary for the log."""
    trie = Trie.load(job.trie)
    loss = make_loss(job.method, job.flower, trie, job.granularity)
    settings = TuneSettings.from_config(job.tune)
    model_settings = settings_from_block(ModelSettings, job.model, "model")
    prompt = settings_from_block(PromptSettings, job.prompt, "prompt")
    if loss.uses_p_ui and job.p_ui_train is None:
        raise ValueError(f"tuning job {job.method}: its reward needs p_ui_train (SASRec scores)")
    device = process_device(job.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    item_titles = read_items(job.items, columns=["item_id", "title"])["title"].tolist()
    train_split = pd.read_parquet(job.train)
    valid_split = pd.read_parquet(job.valid)
    tokenizer = load_tokenizer(model_settings.name_or_path)
    weights = _sample_weights(job, train_split, trie)
    train_rows = seeded_subset(len(train_split), settings.train_samples, settings.seed)
    valid_rows = seeded_subset(len(valid_split), settings.valid_samples, settings.seed)
    p_ui = job.p_ui_train if loss.uses_p_ui else None
    train_data = build_tune_data(
        train_split, train_rows, item_titles, tokenizer, trie, prompt.max_history, weights, p_ui, prompt.style
    )
    valid_data = build_tune_data(
        valid_split, valid_rows, item_titles, tokenizer, trie, prompt.max_history, style=prompt.style
    )
    log.info(
        "%s: %d train / %d valid samples, device %s, world %d",
        job.method,
        len(train_data),
        len(valid_data),
        device,
        world()[1],
    )
    # fp32 weights on every device: they are the master weights, the forward runs under the bf16
    # autocast of tune.precision (flowrec.tune.accel)
    model = load_base_model(
        model_settings.name_or_path,
        model_settings.lora_settings(),
        device=device,
        dtype=torch.float32,
        freeze_layers=model_settings.freeze_layers,
    )
    paths = TrainPaths(Path(job.checkpoints), Path(job.log_csv), Path(job.loss_png))
    result = train(
        model, loss, train_data, valid_data, settings, paths, tokenizer.pad_token_id, name=job.method
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

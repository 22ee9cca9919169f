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

from flowrec import methods
from flowrec.distributed import job_main, launch_job, process_device, world
from flowrec.io import read_items
from flowrec.model import (
    ModelSettings,
    load_base_model,
    load_tokenizer,
    load_tuned,
    prepare_for_training,
    save_tuned,
)
from flowrec.prompts import PromptSettings
from flowrec.settings import settings_from_block
from flowrec.subsets import seeded_subset
from flowrec.trie import Trie
from flowrec.tune.alignment import VALUE_HEAD
from flowrec.tune.data import build_tune_data, group_weights
from flowrec.tune.loop import TrainPaths, train
from flowrec.tune.objectives import make_loss
from flowrec.tune.preferences import draw_negatives
from flowrec.tune.settings import TuneSettings

log = logging.getLogger(__name__)


@dataclass
class TuneJob:
    """Everything one tuning job needs: input and output paths and its config blocks.

    A method's own inputs select its data: `groups` and `groups_json` weight the samples (IFairLRS),
    `p_ui_train` holds the SASRec scores of Flower's div and add rewards and of PPO's reward; an aligned
    method (RQ3) starts from `start_model` and is held to `reference_model`, with its `align` settings.
    """

    method: str  # a trained method of the registry (flowrec.methods.trained())
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
    p_ui_train: str | None = None  # sasrec/p_ui_train.npy (Flower, PPO)
    start_model: str | None = None  # tune/{start}/model: the tuned model an aligned method starts from
    reference_model: str | None = None  # tune/{reference}/model: its frozen reference
    align: dict | None = None  # the aligned method's settings (rules/common.smk get_align_settings)
    device: str | None = None  # default: cuda:{LOCAL_RANK} when CUDA is available, else cpu


def _sample_weights(job: TuneJob, train_split: pd.DataFrame, trie: Trie):
    """IFairLRS's group weights of every train sample when the job has the groups, else None."""
    if job.groups is None and job.groups_json is None:
        return None
    if job.groups is None or job.groups_json is None:
        raise ValueError("tuning job: groups and groups_json come together (IFairLRS sample weights)")
    shares = json.loads(Path(job.groups_json).read_text())["shares"]
    return group_weights(train_split, trie, pd.read_parquet(job.groups), shares)


def _rejected_titles(job: TuneJob, train_split: pd.DataFrame, rows, trie: Trie):
    """The preference samples' rejected titles (len(rows), K), drawn once with the align seed, for the
    methods whose registry entry needs them; else None."""
    if "preferences" not in methods.get(job.method).needs:
        return None
    align = job.align or {}
    targets = np.asarray(trie.item_title)[train_split["target"].to_numpy()[rows]]
    return draw_negatives(
        targets, trie.n_titles, align["sampler"], align["negatives"], align["seed"], trie.title_reward
    )


def _load_policy_and_reference(job: TuneJob, model_settings: ModelSettings, device):
    """The model to train and, for an aligned method, its frozen reference (else None).

    An aligned method's policy is its start model's weights (merged, when that was LoRA), trained as
    model.lora and model.freeze_layers say; the reference is a second copy, in eval mode, without
    gradients. fp32 weights on every device: they are the master weights, the forward runs under the
    bf16 autocast of tune.precision (flowrec.tune.accel)."""
    entry = methods.get(job.method)
    if entry.start is None:
        model = load_base_model(
            model_settings.name_or_path,
            model_settings.lora_settings(),
            device=device,
            dtype=torch.float32,
            freeze_layers=model_settings.freeze_layers,
        )
        return model, None
    if job.start_model is None or job.reference_model is None:
        raise ValueError(f"tuning job {job.method}: needs start_model and reference_model (tuned models)")
    model, _ = load_tuned(job.start_model, device=device, dtype=torch.float32)
    model = prepare_for_training(model, model_settings.lora_settings(), model_settings.freeze_layers)
    reference, _ = load_tuned(job.reference_model, device=device, dtype=torch.float32)
    reference.requires_grad_(False)
    return model, reference.eval()


def run_job(job: TuneJob) -> dict:
    """Train `job.method` and (rank 0) save the model; returns a summary for the log."""
    trie = Trie.load(job.trie)
    settings = TuneSettings.from_config(job.tune)
    model_settings = settings_from_block(ModelSettings, job.model, "model")
    prompt = settings_from_block(PromptSettings, job.prompt, "prompt")
    device = process_device(job.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    model, reference = _load_policy_and_reference(job, model_settings, device)
    block = job.align if methods.get(job.method).kind == "aligned" else job.flower
    loss = make_loss(job.method, block, trie, job.granularity, reference=reference)
    if loss.uses_p_ui and job.p_ui_train is None:
        raise ValueError(f"tuning job {job.method}: its reward needs p_ui_train (SASRec scores)")
    item_titles = read_items(job.items, columns=["item_id", "title"])["title"].tolist()
    train_split = pd.read_parquet(job.train)
    valid_split = pd.read_parquet(job.valid)
    tokenizer = load_tokenizer(model_settings.name_or_path)
    weights = _sample_weights(job, train_split, trie)
    train_rows = seeded_subset(len(train_split), settings.train_samples, settings.seed)
    valid_rows = seeded_subset(len(valid_split), settings.valid_samples, settings.seed)
    p_ui = job.p_ui_train if loss.uses_p_ui else None
    train_data = build_tune_data(
        train_split,
        train_rows,
        item_titles,
        tokenizer,
        trie,
        prompt.max_history,
        weights,
        p_ui,
        prompt.style,
        p_ui_normalisation=loss.p_ui_normalisation,
        rejected_titles=_rejected_titles(job, train_split, train_rows, trie),
        noun=prompt.item_noun,
    )
    valid_data = build_tune_data(
        valid_split,
        valid_rows,
        item_titles,
        tokenizer,
        trie,
        prompt.max_history,
        style=prompt.style,
        noun=prompt.item_noun,
    )
    log.info(
        "%s: %d train / %d valid samples, device %s, world %d",
        job.method,
        len(train_data),
        len(valid_data),
        device,
        world()[1],
    )
    attach = getattr(loss, "attach", None)  # PPO's value head joins the trained parameters
    if attach is not None:
        attach(model)
    paths = TrainPaths(Path(job.checkpoints), Path(job.log_csv), Path(job.loss_png))
    result = train(
        model, loss, train_data, valid_data, settings, paths, tokenizer.pad_token_id, name=job.method
    )
    if hasattr(model, VALUE_HEAD):  # PPO's value head is not part of the recommender
        delattr(model, VALUE_HEAD)
    if world()[0] == 0:
        # An aligned LoRA model is saved merged: its adapter sits on a tuned model, not on the base.
        merge = reference is not None
        save_tuned(model, tokenizer, job.model_dir, model_settings.name_or_path, merge=merge)
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

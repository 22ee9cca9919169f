"""SFT and Flower on a distfit target set through the pipeline's own training loop (docs/method.md section 4).

SFT (BIGRec) is cross-entropy on the tuning set, titles drawn i.i.d. in proportion to the counts; Flower
adds lambda * SubTB on titles sampled from the policy at `sample_temperature` (1: on-policy, the paper's
setting), with the counts as rewards; `flower_published` is the published RQ1 code's recipe
(flowrec.distfit.published: SubTB alone, replay then unconstrained exploration, its own learning rate).
All run through flowrec.tune.loop.train, so the SubTB loss, the samplers and the optimiser are the main
experiment's.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from flowrec.distfit.published import PublishedRQ1Loss
from flowrec.distfit.target import DistfitSettings, draw_titles
from flowrec.settings import block_defaults
from flowrec.trie import Trie
from flowrec.tune.data import TuneData
from flowrec.tune.loop import TrainPaths, train
from flowrec.tune.objectives import FlowerLoss, SFTLoss, TuneLoss
from flowrec.tune.settings import TuneSettings

# Flower with SubTB's log pi over the trie state's children, and over the vocabulary (the ablation)
FLOWER_NORMALISE = {"flower": "children", "flower_vocab": "vocab"}
LOOP_METHODS = ("sft", *FLOWER_NORMALISE, "flower_published")


def tune_data(titles: Sequence[str], trie: Trie, prompt: Sequence[int]) -> TuneData:
    """TuneData of history-free samples: the one prompt, each title's trie path as target."""
    ptr, tokens = np.asarray(trie.title_ptr), np.asarray(trie.title_tokens)
    ids = np.array([trie.title_index[t] for t in titles], dtype=np.int64)
    prompt_t = torch.tensor(list(prompt), dtype=torch.long)
    return TuneData(
        rows=np.arange(len(titles), dtype=np.int64),
        prompts=[prompt_t] * len(titles),
        targets=[torch.from_numpy(tokens[ptr[i] : ptr[i + 1]].astype(np.int64)) for i in ids],
        weights=torch.ones(len(titles)),
        target_titles=torch.from_numpy(ids),
    )


def loop_settings(settings: DistfitSettings, method: str) -> TuneSettings:
    """The loop's settings for the distfit budget: every method gets the same steps, no early stop;
    `flower_published` its own learning rate (the published code's), the others the shared one."""
    published = method == "flower_published"
    return TuneSettings(
        train_samples=None,
        valid_samples=None,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        micro_batch_size=settings.micro_batch_size,
        group_by_length=False,  # one history-free prompt: every sample has the same length
        learning_rate=settings.published_learning_rate if published else settings.learning_rate,
        weight_decay=0.0,
        warmup_ratio=0.0,
        patience=settings.epochs,  # never stop early: every method gets the same budget
        seed=settings.seed,
        max_grad_norm=None,  # as before the setting existed (trl's baselines keep Trainer's 1.0)
        precision="auto",  # bf16 autocast on CUDA over fp32 weights, fp32 on CPU: as trl's runs
        checkpoint_steps=None,  # a run of minutes, checkpointed to a temporary folder: epochs only
        log_steps=block_defaults("tune")["log_steps"],
    )


def loop_loss(method: str, trie: Trie, settings: DistfitSettings) -> TuneLoss:
    """SFTLoss for `sft`; for `flower` and `flower_vocab`, SFT + lambda * SubTB with the counts as rewards,
    log pi normalised over the trie state's children (`flower`) or the vocabulary (`flower_vocab`);
    PublishedRQ1Loss for `flower_published`.

    History-free prompt: no SASRec score p_ui, so the process reward is the plain one, log R_p, and the
    SubTB states are every token (granularity 1). Above 1, sample_temperature explores: SubTB holds for
    any sampler with full support, and log pi in the loss stays at temperature 1.
    """
    if method == "sft":
        return SFTLoss()
    if method == "flower_published":
        return PublishedRQ1Loss(
            trie=trie,
            subtb_decay=settings.published_subtb_decay,
            replay_threshold=settings.published_replay_threshold,
            off_trie_log_reward=settings.published_off_trie_log_reward,
        )
    if method in FLOWER_NORMALISE:
        return FlowerLoss(
            trie=trie,
            lambda_=settings.lambda_,
            reward="plain",
            sample_temperature=settings.sample_temperature,
            granularity=1,
            normalise=FLOWER_NORMALISE[method],
            sft_weight=1.0,
        )
    raise ValueError(f"train_with_loop: method {method!r}; expected one of {LOOP_METHODS}")


def train_with_loop(
    method: str,
    model,
    trie: Trie,
    prompt: Sequence[int],
    tuning_titles: Sequence[str],
    target: Mapping[str, float],
    settings: DistfitSettings,
    pad_id: int,
    log_csv: str | Path,
    loss_png: str | Path,
) -> None:
    """Tune `model` in place with SFT (`sft`) or a Flower row through flowrec.tune.loop.train.

    The loop's validation loss (it keeps the best epoch) is the SFT loss on a second seeded draw from
    T of a quarter of the tuning set's size. Its checkpoints go to a temporary folder: a distfit run
    takes minutes and must never resume from weights trained on another target set.
    """
    loss = loop_loss(method, trie, settings)
    valid_titles = draw_titles(target, max(len(tuning_titles) // 4, 1), settings.seed + 1)
    with tempfile.TemporaryDirectory(prefix=".checkpoints.", dir=Path(log_csv).parent) as ckpt:
        paths = TrainPaths(checkpoints=Path(ckpt), log_csv=Path(log_csv), loss_png=Path(loss_png))
        train(
            model,
            loss,
            tune_data(tuning_titles, trie, prompt),
            tune_data(valid_titles, trie, prompt),
            loop_settings(settings, method),
            paths,
            pad_id,
            name=method,
        )

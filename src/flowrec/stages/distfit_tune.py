"""Stage distfit_tune: tune the base model on the target set with one method (sft, dpo, grpo, flower,
flower_vocab, flower_published), on the history-free prompt and the budget every method shares (RQ1,
docs/method.md sections 4 and 6; flower_published with its own learning rate).

Every method runs on the process's device (flowrec.distributed.process_device: the GPU the rule gets,
else the CPU) with fp32 weights; on CUDA under bf16 autocast (the pipeline's loop with tune.precision
auto, trl with bf16=True), on the CPU in fp32; torch's thread count is the stage's threads.
"""

import logging

import torch

from flowrec.cli import Param, Stage
from flowrec.distfit import trl
from flowrec.distfit.files import read_samples, read_target
from flowrec.distfit.methods import TUNED
from flowrec.distfit.target import DistfitSettings
from flowrec.distfit.train import LOOP_METHODS, train_with_loop
from flowrec.distributed import process_device
from flowrec.model import ModelSettings, describe, load_base_model, load_tokenizer, save_tuned
from flowrec.prompts import history_free_prompt_ids
from flowrec.settings import settings_from_block
from flowrec.trie import Trie

log = logging.getLogger(__name__)

TRL_TRAINERS = {"dpo": trl.train_dpo, "grpo": trl.train_grpo}


def tune(
    target: str,
    trie: str,
    tuning_set: str,
    model: str,
    log_csv: str,
    loss_png: str,
    distfit: dict | None,
    base_model: dict | None,
    method: str,
    threads: int = 1,
) -> None:
    """Tune the base model of `base_model` with `method` and save it to the folder `model`."""
    torch.set_num_threads(threads)
    if method not in TUNED:
        raise ValueError(f"unknown distfit method {method!r}; expected one of {TUNED}")
    settings = DistfitSettings.from_block(distfit)
    model_settings = settings_from_block(ModelSettings, base_model, "model")
    counts = read_target(target)
    target_tree = Trie.load(trie)
    tokenizer = load_tokenizer(model_settings.name_or_path)
    prompt = history_free_prompt_ids(tokenizer)
    device = process_device()
    llm = load_base_model(
        model_settings.name_or_path,
        model_settings.lora_settings(),
        device=device,
        dtype=torch.float32,
        freeze_layers=model_settings.freeze_layers,
    )
    log.info(
        "distfit %s on %d target titles, device %s: %s; settings in effect: %s",
        method,
        len(counts),
        device,
        describe(llm),
        settings.in_effect(distfit),
    )
    if method in LOOP_METHODS:
        tuning = read_samples(tuning_set)
        train_with_loop(
            method,
            llm,
            target_tree,
            prompt,
            tuning,
            counts,
            settings,
            tokenizer.pad_token_id,
            log_csv,
            loss_png,
        )
    else:
        rows = TRL_TRAINERS[method](llm, tokenizer, target_tree, prompt, counts, settings)
        trl.write_training_log(rows, log_csv, loss_png, f"distfit {method}")
    save_tuned(llm, tokenizer, model, model_settings.name_or_path)


STAGE = Stage(
    run=tune,
    doc=__doc__,
    inputs={
        "target": "distfit/target.json",
        "trie": "distfit/trie.npz",
        "tuning_set": "distfit/tuning_set.parquet (the SFT and Flower samples)",
    },
    outputs={
        "model": "distfit/{method}/model: the tuned model folder",
        "log_csv": "distfit/{method}/log.csv: the training log",
        "loss_png": "distfit/{method}/loss.png: the training curves",
    },
    params={
        "distfit": Param("distfit settings: the shared budget and the method's own keys", block="distfit"),
        "base_model": Param("model settings: base model name, LoRA", block="model"),
    },
    wildcards={"method": "sft, dpo, grpo, flower, flower_vocab or flower_published"},
)

if __name__ == "__main__":
    STAGE.main(globals().get("snakemake"))

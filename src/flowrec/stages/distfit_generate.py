"""Stage distfit_generate: titles sampled at temperature 1 under the target trie from the history-free
prompt, by the untuned base model (method base) or a tuned one; and the exact probability of every
target title under the same constrained policy (RQ1, docs/method.md section 6)."""

import logging

import torch

from flowrec.cli import File, Param, Stage
from flowrec.distfit.evaluate import generate_titles
from flowrec.distfit.files import write_samples, write_title_probs
from flowrec.distfit.target import DistfitSettings
from flowrec.distributed import process_device
from flowrec.model import load_base_model, load_tokenizer, load_tuned
from flowrec.prompts import history_free_prompt_ids
from flowrec.sampling import title_log_probs
from flowrec.trie import Trie

log = logging.getLogger(__name__)


def generate(
    trie: str,
    samples: str,
    probs: str,
    distfit: dict | None,
    model_name: str,
    method: str,
    model: str | None = None,
    threads: int = 1,
) -> None:
    """Sample `generate` titles from `method`'s model (the base model for `base`, else the tuned `model`)
    and score every target title exactly."""
    torch.set_num_threads(threads)
    settings = DistfitSettings.from_block(distfit)
    log.info("distfit settings in effect: %s; device %s", settings.in_effect(distfit), process_device())
    target_tree = Trie.load(trie)
    if method == "base":
        tokenizer = load_tokenizer(model_name)
        llm = load_base_model(model_name, device=process_device()).eval()
    else:
        if model is None:
            raise ValueError(f"distfit_generate {method}: a tuned model folder (--model) is required")
        llm, tokenizer = load_tuned(model, device=process_device())
    prompt = history_free_prompt_ids(tokenizer)
    titles = generate_titles(
        llm,
        target_tree,
        prompt,
        settings.n_generate,
        tokenizer.pad_token_id,
        settings.seed,
        settings.generate_batch_size,
    )
    log.info(
        "%s: %d titles generated, %d distinct of %d",
        method,
        len(titles),
        len(set(titles)),
        target_tree.n_titles,
    )
    log_probs = title_log_probs(
        llm, target_tree, prompt, tokenizer.pad_token_id, batch_size=settings.generate_batch_size
    ).numpy()
    write_samples(titles, samples)
    write_title_probs(target_tree.titles, log_probs, probs)


STAGE = Stage(
    run=generate,
    doc=__doc__,
    inputs={
        "model": File("distfit/{method}/model: the tuned model (not for method base)", optional=True),
        "trie": "distfit/trie.npz",
    },
    outputs={
        "samples": "distfit/samples/{method}.parquet: the generated titles",
        "probs": "distfit/probs/{method}.parquet: exact log P of every target title",
    },
    params={
        "distfit": Param(
            "distfit settings: generate, train_samples, generate_batch_size, seed", block="distfit"
        ),
        "model_name": Param("base model (for method base)", block="model.name_or_path"),
    },
    wildcards={"method": "base, or a tuned method: sft, dpo, grpo, flower, flower_vocab, flower_published"},
)

if __name__ == "__main__":
    STAGE.main(globals().get("snakemake"))

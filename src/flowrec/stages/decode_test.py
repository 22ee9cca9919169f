"""Rule decode: trie-constrained beam search of one method over the seeded test subset (method.md 1, 5).

BIGRec, Temp, D3, D3 without assistant, IFairLRS and Flower differ only in the tuned model they load
and the settings rules/infer.smk resolves for them (temperature, length normalisation, D3's weight g).
"""

import time

import numpy as np
import pandas as pd
import torch

from flowrec.d3 import title_masses
from flowrec.decode import DecodeSettings, constrained_beam_search, predictions_table
from flowrec.io import write_parquet
from flowrec.logs import log_to
from flowrec.model import load_tuned
from flowrec.prompts import prompt_ids_batch
from flowrec.subsets import seeded_subset
from flowrec.trie import Trie


def main(snakemake) -> None:
    log = log_to(snakemake.log[0])
    torch.set_num_threads(snakemake.threads)
    settings = DecodeSettings.from_params(dict(snakemake.params.decode))
    max_history = int(snakemake.params.prompt["max_history"])
    method = snakemake.wildcards.method
    log.info(
        "%s %s: decoding with %s (model %s)",
        snakemake.wildcards.dataset,
        method,
        settings,
        snakemake.input.model,
    )

    items = pd.read_parquet(snakemake.input.item_titles, columns=["item_id", "title"]).sort_values("item_id")
    if not np.array_equal(items["item_id"].to_numpy(), np.arange(len(items))):
        raise ValueError(
            f"{snakemake.input.item_titles}: item_id must be 0..{len(items) - 1} (docs/formats.md)"
        )
    item_titles = items["title"].tolist()
    trie = Trie.load(snakemake.input.trie)
    if trie.n_items != len(items):
        raise ValueError(
            f"{snakemake.input.trie}: built for {trie.n_items} items, {snakemake.input.item_titles} has {len(items)}"
        )
    test = pd.read_parquet(snakemake.input.test, columns=["history"])
    samples = seeded_subset(len(test), settings.test_samples, settings.seed)

    model, tokenizer = load_tuned(snakemake.input.model)
    histories = test["history"].iloc[samples]
    prompts = prompt_ids_batch(tokenizer, [[item_titles[i] for i in h] for h in histories], max_history)

    assistant = None
    if settings.assistant_weight is not None:
        p_ui = np.load(snakemake.input.p_ui, mmap_mode="r")
        if p_ui.shape != (len(test), len(items)):
            raise ValueError(
                f"{snakemake.input.p_ui}: shape {p_ui.shape}, expected (test samples, items) = "
                f"{(len(test), len(items))}"
            )
        assistant = title_masses(p_ui[samples], trie.item_title, trie.n_titles)

    start = time.perf_counter()
    ranked = constrained_beam_search(
        model,
        prompts,
        trie,
        num_beams=settings.num_beams,
        num_return=settings.num_return,
        batch_size=settings.batch_size,
        temperature=settings.temperature,
        length_normalise=settings.length_normalise,
        assistant_title_scores=assistant,
        assistant_weight=1.0 if settings.assistant_weight is None else settings.assistant_weight,
        pad_token_id=tokenizer.pad_token_id,
        progress=True,
    )
    elapsed = time.perf_counter() - start
    log.info(
        "decoded %d test prompts in %.1f s: %.3f s per prompt (%d beams, batches of %d, device %s)",
        len(prompts),
        elapsed,
        elapsed / max(len(prompts), 1),
        settings.num_beams,
        settings.batch_size,
        next(model.parameters()).device,
    )
    short = sum(len(r) < settings.num_return for r in ranked)
    if short:
        log.warning(
            "%d prompts got fewer than %d titles (the trie holds %d)",
            short,
            settings.num_return,
            trie.n_titles,
        )
    write_parquet(predictions_table(samples, ranked, trie), snakemake.output[0])


if __name__ == "__main__":  # Snakemake runs a script: as __main__
    main(snakemake)  # noqa: F821

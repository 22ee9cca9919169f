"""Rule distfit_generate: titles sampled at temperature 1 under the target trie from the history-free
prompt, by the untuned base model (method base) or a tuned one; and the exact probability of every
target title under the same constrained policy."""

import torch

from flowrec import distfit
from flowrec.logs import log_to
from flowrec.model import load_base_model, load_tokenizer, load_tuned
from flowrec.prompts import history_free_prompt_ids
from flowrec.sampling import title_log_probs
from flowrec.trie import Trie


def main(snakemake) -> None:
    log = log_to(snakemake.log[0])
    torch.set_num_threads(snakemake.threads)
    method = snakemake.wildcards.method
    settings = distfit.DistfitSettings.from_params(snakemake.params.distfit)
    trie = Trie.load(snakemake.input.trie)
    if method == "base":
        tokenizer = load_tokenizer(snakemake.params.model_name)
        model = load_base_model(snakemake.params.model_name, device="cpu").eval()
    else:
        model, tokenizer = load_tuned(snakemake.input.model, device="cpu")
    prompt = history_free_prompt_ids(tokenizer)
    titles = distfit.generate_titles(
        model,
        trie,
        prompt,
        settings.n_generate,
        tokenizer.pad_token_id,
        settings.seed,
        settings.generate_batch_size,
    )
    log.info(
        "%s: %d titles generated, %d distinct of %d", method, len(titles), len(set(titles)), trie.n_titles
    )
    log_probs = title_log_probs(
        model, trie, prompt, tokenizer.pad_token_id, batch_size=settings.generate_batch_size
    ).numpy()
    distfit.write_samples(titles, snakemake.output.samples)
    distfit.write_title_probs(trie, log_probs, snakemake.output.probs)


if __name__ == "__main__":  # Snakemake runs a script: as __main__
    main(snakemake)  # noqa: F821

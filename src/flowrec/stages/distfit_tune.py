"""Rule distfit_tune: tune the base model on the target set with one method (sft, dpo, grpo, flower).

Everything runs on the CPU (trl's runs with use_cpu=True; SFT and Flower beside them for a like-for-like
comparison), with torch's thread count set to the rule's threads.
"""

import torch

from flowrec import distfit
from flowrec.logs import log_to
from flowrec.model import ModelSettings, describe, load_base_model, load_tokenizer, save_tuned
from flowrec.prompts import history_free_prompt_ids
from flowrec.trie import Trie


def main(snakemake) -> None:
    log = log_to(snakemake.log[0])
    torch.set_num_threads(snakemake.threads)
    method = snakemake.wildcards.method
    settings = distfit.DistfitSettings.from_params(snakemake.params.distfit)
    model_settings = ModelSettings.from_config(dict(snakemake.params.model))
    inp, out = snakemake.input, snakemake.output
    target = distfit.read_target(inp.target)
    trie = Trie.load(inp.trie)
    tokenizer = load_tokenizer(model_settings.name_or_path)
    prompt = history_free_prompt_ids(tokenizer)
    model = load_base_model(model_settings.name_or_path, model_settings.lora_settings(), device="cpu")
    log.info("distfit %s on %d target titles: %s, %s", method, len(target), describe(model), settings)
    if method in ("sft", "flower"):
        tuning = distfit.read_samples(inp.tuning_set)
        distfit.train_with_loop(
            method,
            model,
            trie,
            prompt,
            tuning,
            target,
            settings,
            tokenizer.pad_token_id,
            out.log_csv,
            out.loss_png,
        )
    else:
        from flowrec import distfit_trl

        train = {"dpo": distfit_trl.train_dpo, "grpo": distfit_trl.train_grpo}.get(method)
        if train is None:
            raise ValueError(f"unknown distfit method {method!r}; expected one of {distfit.TUNED}")
        rows = train(model, tokenizer, trie, prompt, target, settings)
        distfit_trl.write_training_log(rows, out.log_csv, out.loss_png, f"distfit {method}")
    save_tuned(model, tokenizer, out.model, model_settings.name_or_path)


if __name__ == "__main__":  # Snakemake runs a script: as __main__
    main(snakemake)  # noqa: F821

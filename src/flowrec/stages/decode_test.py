"""Rule decode: trie-constrained beam search of one method over the seeded test subset (method.md 1, 5).

BIGRec, Temp, D3, D3 without assistant, IFairLRS and Flower differ only in the tuned model they load
and the settings rules/infer.smk resolves for them (temperature, length normalisation, D3's weight g).
More than one GPU in the rule's resources (`gpu`, or `nproc` to force a process count) decodes with one
torchrun process per device (flowrec.decode_run).
"""

import torch

from flowrec.decode_run import DecodeJob, launch
from flowrec.logs import log_to


def main(snakemake) -> None:
    log = log_to(snakemake.log[0])
    torch.set_num_threads(snakemake.threads)
    job = DecodeJob(
        model_dir=snakemake.input.model,
        trie=snakemake.input.trie,
        item_titles=snakemake.input.item_titles,
        test=snakemake.input.test,
        output=snakemake.output[0],
        decode=dict(snakemake.params.decode),
        max_history=int(snakemake.params.prompt["max_history"]),
        p_ui=getattr(snakemake.input, "p_ui", None),  # D3 only
    )
    resources = snakemake.resources
    nproc = max(int(getattr(resources, "nproc", 0) or 0) or int(getattr(resources, "gpu", 0) or 0), 1)
    log.info(
        "%s %s: decoding with %s, %d process(es)",
        snakemake.wildcards.dataset,
        snakemake.wildcards.method,
        job.decode,
        nproc,
    )
    launch(job, nproc)


if __name__ == "__main__":  # Snakemake runs a script: as __main__
    main(snakemake)  # noqa: F821

"""Stage entry of the rules tune_bigrec, tune_ifairlrs and tune_flower (rules/tune.smk).

Runs in this process, or under torchrun with one process per GPU when the rule's resources ask for
more than one (`gpu`, or `nproc` to force a process count, e.g. --set-resources tune_flower:nproc=2).
"""

import os

from flowrec.logs import log_to
from flowrec.tune.run import TuneJob, launch


def main(snakemake) -> None:
    log = log_to(snakemake.log[0])
    params, inp, out = snakemake.params, snakemake.input, snakemake.output
    method = params.method
    job = TuneJob(
        method=method,
        data_dir=os.path.dirname(inp.train),  # items, train and valid parquet sit together
        trie=inp.trie,
        model_dir=out.model,
        log_csv=out.log_csv,
        loss_png=out.loss_png,
        checkpoints=params.checkpoints,
        model=dict(params.model),
        prompt=dict(params.prompt),
        tune=dict(params.tune),
        flower=dict(params.flower) if method == "flower" else None,
        granularity=int(params.granularity) if method == "flower" else 1,
        groups=inp.get("groups"),
        groups_json=inp.get("groups_json"),
        p_ui_train=inp.get("p_ui_train"),
    )
    resources = snakemake.resources
    nproc = int(resources.get("nproc", 0) or 0) or int(resources.get("gpu", 0) or 0)
    log.info("tune %s: %d process(es)", method, max(nproc, 1))
    launch(job, max(nproc, 1))


if __name__ == "__main__":  # Snakemake runs a script: as __main__
    main(snakemake)  # noqa: F821

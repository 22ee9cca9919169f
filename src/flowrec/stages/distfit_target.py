"""Rule distfit_target: the target set T, the trie over its titles and the SFT tuning set (flowrec.distfit)."""

import pandas as pd

from flowrec import distfit
from flowrec.io import write_json
from flowrec.logs import log_to
from flowrec.model import load_tokenizer


def main(snakemake) -> None:
    log = log_to(snakemake.log[0])
    settings = distfit.DistfitSettings.from_params(snakemake.params.distfit)
    dataset = snakemake.wildcards.dataset
    if settings.target:
        items = pd.read_parquet(snakemake.input.item_titles, columns=["title"])["title"].tolist()
        target = distfit.read_target_file(settings.target, items, dataset)
        log.info("%s: target set of %d titles from %s", dataset, len(target), settings.target)
    else:
        target = distfit.top_titles(pd.read_parquet(snakemake.input.groups), settings.top_n)
        log.info("%s: target set = the %d most frequent titles in train histories", dataset, len(target))
    trie = distfit.target_trie(target, load_tokenizer(snakemake.params.model_name))
    tuning = distfit.draw_titles(target, settings.train_samples, settings.seed)
    log.info(
        "trie: %d nodes, %d titles; tuning set: %d titles, %d distinct",
        trie.n_nodes,
        trie.n_titles,
        len(tuning),
        len(set(tuning)),
    )
    write_json(target, snakemake.output.target)
    trie.save(snakemake.output.trie)
    distfit.write_samples(tuning, snakemake.output.tuning_set)


if __name__ == "__main__":  # Snakemake runs a script: as __main__
    main(snakemake)  # noqa: F821

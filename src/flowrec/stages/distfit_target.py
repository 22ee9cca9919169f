"""Stage distfit_target: the target set T of distribution fitting (RQ1), the trie over its titles and the
SFT tuning set (flowrec.distfit.target; docs/method.md sections 3 and 6).

T is the file `distfit.target` (JSON {title: count} or CSV title,count; any titles, no dataset needed),
or else, as in the paper, `target_size` titles sampled from the dataset's titles that occur in train
histories, with those frequencies as counts.
"""

import logging

import pandas as pd

from flowrec.cli import File, Param, Stage
from flowrec.distfit.files import write_samples
from flowrec.distfit.target import DistfitSettings, draw_titles, read_target_file, sampled_titles, target_trie
from flowrec.io import write_json
from flowrec.model import load_tokenizer

log = logging.getLogger(__name__)


def build_target(
    target: str,
    trie: str,
    tuning_set: str,
    distfit: dict | None,
    model_name: str,
    dataset: str,
    groups: str | None = None,
    target_file: str | None = None,
) -> None:
    """Write target.json, the target trie and the tuning set of `dataset`.

    `target_file` is only the rule's dependency on the file of `distfit.target` (editing it reruns the
    stage); the path read is `distfit.target`.
    """
    settings = DistfitSettings.from_block(distfit)
    log.info("distfit settings in effect: %s", settings.in_effect(distfit))
    if settings.target:
        counts = read_target_file(settings.target)
        log.info("%s: target set of %d titles from %s", dataset, len(counts), settings.target)
    else:
        if groups is None:
            raise ValueError(
                "distfit_target: without distfit.target the stage needs --groups (trie/groups.parquet)"
            )
        counts = sampled_titles(pd.read_parquet(groups), settings.target_size, settings.target_seed)
        log.info(
            "%s: target set = %d titles sampled (seed %d) from those in train histories, max/min count %.1f",
            dataset,
            len(counts),
            settings.target_seed,
            max(counts.values()) / min(counts.values()),
        )
    target_tree = target_trie(counts, load_tokenizer(model_name))
    tuning = draw_titles(counts, settings.train_samples, settings.seed)
    log.info(
        "trie: %d nodes, %d titles; tuning set: %d titles, %d distinct",
        target_tree.n_nodes,
        target_tree.n_titles,
        len(tuning),
        len(set(tuning)),
    )
    write_json(counts, target)
    target_tree.save(trie)
    write_samples(tuning, tuning_set)


STAGE = Stage(
    run=build_target,
    doc=__doc__,
    inputs={
        "groups": File(
            "trie/groups.parquet (train-history frequency of every title); without distfit.target",
            optional=True,
        ),
        "target_file": File("the file of distfit.target, when one is set", optional=True),
    },
    outputs={
        "target": "distfit/target.json: {title: count}, by count descending",
        "trie": "distfit/trie.npz: the trie over the target titles, R(i) = count",
        "tuning_set": "distfit/tuning_set.parquet: train_samples titles drawn from T",
    },
    params={
        "distfit": Param(
            "distfit settings: target, target_size, target_seed, train_samples, seed", block="distfit"
        ),
        "model_name": Param("base model (its tokenizer gives the title ids)", block="model.name_or_path"),
    },
    wildcards={"dataset": "dataset name (the results folder; its data when no target file is set)"},
)

if __name__ == "__main__":
    STAGE.main(globals().get("snakemake"))

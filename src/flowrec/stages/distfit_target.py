"""Stage distfit_target: the target set T of distribution fitting (RQ1), the trie over its titles and the
SFT tuning set (flowrec.distfit.target; docs/method.md sections 3 and 6).

T is the JSON file `distfit.target` (checked against the dataset's item titles), or else the `top_n`
titles most frequent in the train histories, with those frequencies as counts.
"""

import logging

import pandas as pd

from flowrec.cli import File, Param, Stage
from flowrec.distfit.files import write_samples
from flowrec.distfit.target import DistfitSettings, draw_titles, read_target_file, target_trie, top_titles
from flowrec.io import read_items, write_json
from flowrec.model import load_tokenizer

log = logging.getLogger(__name__)


def build_target(
    item_table: str,
    groups: str,
    target: str,
    trie: str,
    tuning_set: str,
    distfit: dict | None,
    model_name: str,
    dataset: str,
    target_file: str | None = None,
) -> None:
    """Write target.json, the target trie and the tuning set of `dataset`.

    `target_file` is only the rule's dependency on the file of `distfit.target` (editing it reruns the
    stage); the path read is `distfit.target`.
    """
    settings = DistfitSettings.from_block(distfit)
    log.info("distfit settings in effect: %s", settings.in_effect(distfit))
    if settings.target:
        titles = read_items(item_table, columns=["item_id", "title"])["title"].tolist()
        counts = read_target_file(settings.target, titles, dataset)
        log.info("%s: target set of %d titles from %s", dataset, len(counts), settings.target)
    else:
        counts = top_titles(pd.read_parquet(groups), settings.top_n)
        log.info("%s: target set = the %d most frequent titles in train histories", dataset, len(counts))
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
        "item_table": "data/items.parquet (the item titles a target file is checked against)",
        "groups": "trie/groups.parquet (train-history frequency of every title)",
        "target_file": File("the file of distfit.target, when one is set", optional=True),
    },
    outputs={
        "target": "distfit/target.json: {title: count}, by count descending",
        "trie": "distfit/trie.npz: the trie over the target titles, R(i) = count",
        "tuning_set": "distfit/tuning_set.parquet: train_samples titles drawn from T",
    },
    params={
        "distfit": Param("distfit settings: target, top_n, train_samples, seed", block="distfit"),
        "model_name": Param("base model (its tokenizer gives the title ids)", block="model.name_or_path"),
    },
    wildcards={"dataset": "dataset name (named in target-file errors)"},
)

if __name__ == "__main__":
    STAGE.main(globals().get("snakemake"))

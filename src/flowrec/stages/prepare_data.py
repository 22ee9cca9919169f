"""Stage prepare_data: one dataset's source files -> items, train/valid/test, stats.json, d3/*.csv.

The source files are named by role and depend on the dataset's source (docs/method.md section 2):
movielens reads inter and item, amazon reads reviews and meta; an imported D3 split is read from its
folder (datasets.{dataset}.import_dir), and its files are inputs only so that editing them reruns the stage.
"""

import logging

from flowrec.cli import File, Param, Stage
from flowrec.data import prepare, write_prepared
from flowrec.data.settings import dataset_settings

log = logging.getLogger(__name__)


def prepare_data(
    item_table: str,
    train: str,
    valid: str,
    test: str,
    stats: str,
    d3_train: str,
    d3_valid: str,
    d3_test: str,
    settings: dict,
    dataset: str,
    inter: str | None = None,
    item: str | None = None,
    reviews: str | None = None,
    meta: str | None = None,
    train_csv: str | None = None,
    valid_csv: str | None = None,
    test_csv: str | None = None,
    items_tsv: str | None = None,
) -> dict:
    """Run the data protocol on the given source files and write every output; returns the statistics."""
    dataset_config = dataset_settings(settings, dataset)
    sources = {"inter": inter, "item": item, "reviews": reviews, "meta": meta}
    sources |= {"train": train_csv, "valid": valid_csv, "test": test_csv, "items_tsv": items_tsv}
    inputs = {role: path for role, path in sources.items() if path is not None}
    log.info("dataset %s (%s): inputs %s", dataset, dataset_config.source, inputs)
    data = prepare(dataset_config, inputs)
    outputs = {"train": train, "valid": valid, "test": test, "stats": stats}
    outputs |= {"d3_train": d3_train, "d3_valid": d3_valid, "d3_test": d3_test}
    write_prepared(data, {**outputs, "items": item_table})
    log.info("stats: %s", data.stats)
    return data.stats


STAGE = Stage(
    run=prepare_data,
    doc=__doc__,
    inputs={
        "inter": File("ml-100k.inter (source movielens)", optional=True),
        "item": File("ml-100k.item (source movielens)", optional=True),
        "reviews": File("{category}.json.gz, Amazon 2018 reviews (source amazon)", optional=True),
        "meta": File("meta_{category}.json.gz, Amazon 2018 metadata (source amazon)", optional=True),
        "train_csv": File("import_dir/train.csv (source import)", optional=True),
        "valid_csv": File("import_dir/valid.csv (source import)", optional=True),
        "test_csv": File("import_dir/test.csv (source import)", optional=True),
        "items_tsv": File(
            "import_dir/items.tsv, if the imported split has one (source import)", optional=True
        ),
    },
    outputs={
        "item_table": "data/items.parquet",
        "train": "data/train.parquet",
        "valid": "data/valid.parquet",
        "test": "data/test.parquet",
        "stats": "data/stats.json",
        "d3_train": "data/d3/train.csv (the D3/BIGRec CSV format)",
        "d3_valid": "data/d3/valid.csv",
        "d3_test": "data/d3/test.csv",
    },
    params={"settings": Param("the dataset's config entry", block="datasets.{dataset}")},
    wildcards={"dataset": "dataset name (a key of `datasets`)"},
)

if __name__ == "__main__":
    STAGE.main(globals().get("snakemake"))

"""Stage predict_reference: the Random and MostPop reference rows as prediction files (docs/method.md
section 5), for every test sample; evaluate_method scores them like any method."""

import logging

import pandas as pd
import pyarrow.parquet as pq

from flowrec.cli import Param, Stage
from flowrec.io import read_items, write_parquet
from flowrec.reference import reference_predictions

log = logging.getLogger(__name__)


def predict_reference(
    item_table: str, train: str, test: str, predictions: str, num_return: int, seed: int, method: str
) -> None:
    """Write `method`'s (random | mostpop) lists of `num_return` titles for every test sample."""
    items = read_items(item_table, columns=["item_id", "title"])
    if items["title"].isna().any():
        raise ValueError(
            f"{item_table}: items {items.loc[items['title'].isna(), 'item_id'].tolist()[:5]} have no title"
        )
    histories = pq.read_table(train, columns=["history"]).column("history")
    n_test = pd.read_parquet(test, columns=["target"]).shape[0]
    table = reference_predictions(method, items["title"], histories, n_test, int(num_return), int(seed))
    write_parquet(table, predictions)
    log.info("%s: %d lists of %d titles -> %s", method, table.num_rows, int(num_return), predictions)


STAGE = Stage(
    run=predict_reference,
    doc=__doc__,
    inputs={
        "item_table": "data/items.parquet (the catalogue's titles)",
        "train": "data/train.parquet (MostPop's popularity)",
        "test": "data/test.parquet (one list per test sample)",
    },
    outputs={"predictions": "predictions/{method}.parquet (docs/formats.md)"},
    params={
        "num_return": Param("titles per list", block="decode.num_return"),
        "seed": Param("seed of Random's draws", block="reference.seed"),
    },
    wildcards={"method": "random or mostpop"},
)

if __name__ == "__main__":
    STAGE.main(globals().get("snakemake"))

"""Stage afl_train_recmodel: GRU4Rec or Caser in RecBole on the canonical split (docs/method.md section
9) -> model, p_ui of the test split, metrics; SASRec comes from train_sasrec."""

import logging

from flowrec.afl.recmodels import RecModelSettings, train_and_export
from flowrec.cli import Param, Stage
from flowrec.settings import settings_from_block

log = logging.getLogger(__name__)


def run(
    item_table: str, train: str, valid: str, test: str, model: str, p_ui_test: str, metrics: str,
    recmodel_settings: dict, recmodel: str, dataset: str, threads: int,
) -> dict:  # fmt: skip
    settings = settings_from_block(RecModelSettings, recmodel_settings, f"afl.{recmodel}")
    log.info("afl_train_recmodel %s %s: %s", dataset, recmodel, settings)
    splits = {"train": train, "valid": valid, "test": test}
    return train_and_export(recmodel, settings, item_table, splits, threads, model, p_ui_test, metrics)


STAGE = Stage(
    run=run,
    doc=__doc__,
    inputs={
        "item_table": "data/items.parquet",
        "train": "data/train.parquet",
        "valid": "data/valid.parquet",
        "test": "data/test.parquet",
    },
    outputs={
        "model": "afl/recmodels/{recmodel}/model.pth",
        "p_ui_test": "afl/recmodels/{recmodel}/p_ui_test.npy (float16 softmax rows)",
        "metrics": "afl/recmodels/{recmodel}/metrics.json",
    },
    params={"recmodel_settings": Param("the model's settings", block="afl.{recmodel}")},
    wildcards={"recmodel": "gru4rec or caser", "dataset": "dataset name (for the log)"},
)

if __name__ == "__main__":
    STAGE.main(globals().get("snakemake"))

"""Stage train_sasrec: SASRec in RecBole -> model, p_ui per split, metrics, baseline top-10.

p_ui (one softmax over all items per sample) is Flower's personalised reward and D3's assistant; the
top-10 titles per test sample are the SASRec baseline (docs/method.md sections 4-5).
"""

import logging

from flowrec.cli import Param, Stage
from flowrec.sasrec import SasrecSettings
from flowrec.sasrec_recbole import train_and_export
from flowrec.settings import settings_from_block

log = logging.getLogger(__name__)


def fit_sasrec(
    item_table: str,
    train: str,
    valid: str,
    test: str,
    model: str,
    metrics: str,
    p_ui_train: str,
    p_ui_valid: str,
    p_ui_test: str,
    predictions: str,
    sasrec: dict,
    dataset: str,
    threads: int,
) -> dict:
    """Train SASRec on the split and write every output; returns the metrics written to `metrics`."""
    settings = settings_from_block(SasrecSettings, sasrec, "sasrec")
    log.info("train_sasrec %s: %s, %d threads", dataset, settings, threads)
    return train_and_export(
        items_path=item_table,
        split_paths={"train": train, "valid": valid, "test": test},
        settings=settings,
        threads=threads,
        model_path=model,
        metrics_path=metrics,
        p_ui_paths={"train": p_ui_train, "valid": p_ui_valid, "test": p_ui_test},
        predictions_path=predictions,
    )


STAGE = Stage(
    run=fit_sasrec,
    doc=__doc__,
    inputs={
        "item_table": "data/items.parquet",
        "train": "data/train.parquet",
        "valid": "data/valid.parquet",
        "test": "data/test.parquet",
    },
    outputs={
        "model": "sasrec/model.pth (state dict and item-id mapping)",
        "metrics": "sasrec/metrics.json (HR/NDCG of valid and test, best epoch)",
        "p_ui_train": "sasrec/p_ui_train.npy (float16 softmax rows)",
        "p_ui_valid": "sasrec/p_ui_valid.npy",
        "p_ui_test": "sasrec/p_ui_test.npy",
        "predictions": "predictions/sasrec.parquet (docs/formats.md)",
    },
    params={"sasrec": Param("SASRec settings", block="sasrec")},
    wildcards={"dataset": "dataset name (for the log)"},
)

if __name__ == "__main__":
    STAGE.main(globals().get("snakemake"))

"""Stage evaluate_method: every metric of one method's test predictions (docs/method.md section 6).

SASRec scores every test sample; it is compared with the LLM methods on their decoded subset (the
seeded subset of decode.test_samples). An LLM method is scored on the samples it decoded.
"""

import logging

import numpy as np
import pandas as pd

from flowrec.cli import Param, Stage
from flowrec.io import write_json
from flowrec.metrics import MetricsSettings, eval_subset, evaluate_prediction_files
from flowrec.settings import settings_from_block

log = logging.getLogger(__name__)


def evaluate(
    predictions: str,
    test: str,
    item_table: str,
    groups: str,
    groups_json: str,
    metrics_json: str,
    metrics: dict,
    decode: dict,
    dataset: str,
    method: str,
) -> dict:
    """Score `predictions` against the test split and write the metrics JSON; returns it."""
    settings = settings_from_block(MetricsSettings, metrics, "metrics")
    n_test = pd.read_parquet(test, columns=["target"]).shape[0]
    subset = eval_subset(n_test, decode["test_samples"], decode["seed"])
    present = pd.read_parquet(predictions, columns=["sample"])["sample"].to_numpy()
    restrict = subset if method == "sasrec" else None
    if method != "sasrec" and not np.array_equal(np.sort(present), subset):
        log.warning(
            "%s: %d decoded samples differ from the seeded subset of %d (decode.test_samples=%s, "
            "decode.seed=%s); scoring the decoded ones",
            predictions,
            len(present),
            len(subset),
            decode["test_samples"],
            decode["seed"],
        )
    scores = evaluate_prediction_files(
        predictions=predictions,
        test=test,
        items=item_table,
        groups=groups,
        groups_json=groups_json,
        settings=settings,
        list_k=decode["num_return"],
        subset=restrict,
    )
    out = {"dataset": dataset, "method": method, **scores}
    log.info("%s %s: %s", dataset, method, {k: v for k, v in out.items() if "@" in k or k in ("H", "TTR")})
    write_json(out, metrics_json)
    return out


STAGE = Stage(
    run=evaluate,
    doc=__doc__,
    inputs={
        "predictions": "predictions/{method}.parquet (docs/formats.md)",
        "test": "data/test.parquet",
        "item_table": "data/items.parquet",
        "groups": "trie/groups.parquet",
        "groups_json": "trie/groups.json (group shares of the data)",
    },
    outputs={"metrics_json": "metrics/{method}.json"},
    params={
        "metrics": Param("metric cut-offs", block="metrics"),
        "decode": Param("decode settings: test_samples, seed, num_return", block="decode"),
    },
    wildcards={"dataset": "dataset name", "method": "method name (sasrec scores on the decoded subset)"},
)

if __name__ == "__main__":
    STAGE.main(globals().get("snakemake"))

"""Stage evaluate_method: every metric of one method's test predictions (docs/method.md section 6), with
an interval per metric (flowrec.sample_metrics: a bootstrap for HR/NDCG, a grouped jackknife for the
set statistics) and the per-sample values the paired comparisons of make_tables use.

Every method is scored on the seeded subset of decode.test_samples: SASRec and the reference rows
(Random, MostPop) predict every test sample and are cut to it. A method that decoded other samples (a
partial decode) is scored on the samples it has, with a warning.
"""

import logging

import numpy as np
import pyarrow as pa

from flowrec.cli import Param, Stage
from flowrec.io import read_parquet, write_json, write_parquet
from flowrec.metric_cutoffs import check_cutoffs
from flowrec.metrics import MetricsSettings, eval_subset, read_scoring_inputs
from flowrec.sample_metrics import evaluate_inputs, interval_method
from flowrec.settings import settings_from_block

log = logging.getLogger(__name__)


def evaluate(
    predictions: str,
    test: str,
    item_table: str,
    groups: str,
    groups_json: str,
    metrics_json: str,
    samples: str,
    metrics: dict,
    decode: dict,
    dataset: str,
    method: str,
) -> dict:
    """Score `predictions` against the test split; write the metrics JSON (point values, intervals) and
    the per-sample values; returns the JSON."""
    settings = settings_from_block(MetricsSettings, metrics, "metrics")
    n_test = read_parquet(test, columns=["target"]).shape[0]
    subset = eval_subset(n_test, decode["test_samples"], decode["seed"])
    present = read_parquet(predictions, columns=["sample"])["sample"].to_numpy()
    restrict = subset if np.isin(subset, present).all() else None
    if restrict is None:
        log.warning(
            "%s: %d predicted samples do not cover the seeded subset of %d (decode.test_samples=%s, "
            "decode.seed=%s); scoring the predicted ones",
            predictions,
            len(present),
            len(subset),
            decode["test_samples"],
            decode["seed"],
        )
    inputs = read_scoring_inputs(predictions, test, item_table, groups, groups_json, restrict)
    list_k = decode["num_return"]
    # the rule checks at parse time; this call covers the stage run on its own (python -m, flowrec.cli)
    check_cutoffs(settings.ks, settings.fairness_ks, list_k)
    scores, table = evaluate_inputs(inputs, settings, list_k)
    evaluation = {
        "n_titles": inputs.n_titles,
        "list_k": list_k,
        "bootstrap_draws": settings.bootstrap_draws,
        "bootstrap_seed": settings.bootstrap_seed,
        "confidence": settings.confidence,
        "jackknife_groups": min(settings.jackknife_groups, len(table)),
        "interval_methods": {m: interval_method(m) for m in scores["ci"]},
    }
    out = {"dataset": dataset, "method": method, **scores, "evaluation": evaluation}
    log.info("%s %s: %s", dataset, method, {k: v for k, v in out.items() if "@" in k or k in ("H", "TTR")})
    write_parquet(pa.Table.from_pandas(table, preserve_index=False), samples)
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
    outputs={
        "metrics_json": "metrics/{method}.json (point values, `ci` intervals)",
        "samples": "metrics/samples/{method}.parquet (per-sample values)",
    },
    params={
        "metrics": Param("metric cut-offs and interval settings", block="metrics"),
        "decode": Param("decode settings: test_samples, seed, num_return", block="decode"),
    },
    wildcards={"dataset": "dataset name", "method": "method name"},
)

if __name__ == "__main__":
    STAGE.main(globals().get("snakemake"))

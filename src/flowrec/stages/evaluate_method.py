"""Rule evaluate_method: every metric of one method's test predictions (method.md section 6)."""

import numpy as np
import pandas as pd

from flowrec.io import write_json
from flowrec.logs import log_to
from flowrec.metrics import MetricsSettings, eval_subset, evaluate_prediction_files


def main(snakemake) -> None:
    log = log_to(snakemake.log[0])
    settings = MetricsSettings.from_dict(snakemake.params.metrics)
    decode = snakemake.params.decode
    method = snakemake.wildcards.method
    n_test = pd.read_parquet(snakemake.input.test, columns=["target"]).shape[0]
    subset = eval_subset(n_test, decode["test_samples"], decode["seed"])
    present = pd.read_parquet(snakemake.input.predictions, columns=["sample"])["sample"].to_numpy()
    if method == "sasrec":
        # SASRec scores every test sample; compare it on the LLM methods' decoded subset only.
        restrict = subset
    else:
        restrict = None  # the samples this method decoded
        if not np.array_equal(np.sort(present), subset):
            log.warning(
                "%s: %d decoded samples differ from the seeded subset of %d (decode.test_samples=%s, "
                "decode.seed=%s); scoring the decoded ones",
                snakemake.input.predictions,
                len(present),
                len(subset),
                decode["test_samples"],
                decode["seed"],
            )
    metrics = evaluate_prediction_files(
        predictions=snakemake.input.predictions,
        test=snakemake.input.test,
        items=snakemake.input.item_titles,
        groups=snakemake.input.groups,
        groups_json=snakemake.input.group_shares,
        settings=settings,
        list_k=decode["num_return"],
        subset=restrict,
    )
    out = {"dataset": snakemake.wildcards.dataset, "method": method, **metrics}
    log.info(
        "%s %s: %s",
        snakemake.wildcards.dataset,
        method,
        {k: v for k, v in out.items() if "@" in k or k in ("H", "TTR")},
    )
    write_json(out, snakemake.output[0])


if __name__ == "__main__":  # Snakemake runs a script: as __main__
    main(snakemake)  # noqa: F821

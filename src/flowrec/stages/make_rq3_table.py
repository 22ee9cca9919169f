"""Stage make_rq3_table: the paper's Table 5 (RQ3) on one dataset: every aligned row (S-DPO, DMPO,
RosePO, PPO from BIGRec and from Flower) with its bootstrap intervals, and per algorithm the paired
difference F_x - B_x over the same test samples (flowrec.report_rq3; docs/method.md section 10).
"""

import logging

import pandas as pd

from flowrec.cli import File, Param, Stage
from flowrec.io import atomic_path, write_text
from flowrec.metrics import MetricsSettings
from flowrec.report import read_metrics, results_table
from flowrec.report_paired import paired_comparisons
from flowrec.report_rq3 import rq3_markdown, rq3_pair_table, start_pairs
from flowrec.settings import settings_from_block

log = logging.getLogger(__name__)


def make_rq3_table(
    metrics: list[str],
    samples: list[str],
    csv: str,
    md: str,
    paired_csv: str,
    methods: list[str],
    metrics_settings: dict,
    dataset: str,
) -> None:
    """Table 5 from the aligned rows' metrics and per-sample files (one of each per method, in order)."""
    settings = settings_from_block(MetricsSettings, metrics_settings, "metrics")
    by_method = read_metrics(dict(zip(methods, metrics, strict=True)))
    per_sample = {m: pd.read_parquet(p) for m, p in zip(methods, samples, strict=True)}
    pairs = {family: (f_row, b_row) for family, b_row, f_row in start_pairs(methods)}
    differences = paired_comparisons(pairs, by_method, per_sample, settings)
    long = rq3_pair_table(differences)
    table = results_table(by_method)
    with atomic_path(csv) as tmp:
        table.to_csv(tmp)
    with atomic_path(paired_csv) as tmp:
        long.to_csv(tmp, index=False)
    title = f"Table 5 (RQ3): alignment from BIGRec (B_) and from Flower (F_) on {dataset}"
    write_text(rq3_markdown(by_method, long, title, settings.confidence, settings.bootstrap_draws), md)
    log.info("%s\n%s\n%s", title, table.to_string(), long.to_string())


STAGE = Stage(
    run=make_rq3_table,
    doc=__doc__,
    inputs={
        "metrics": File("metrics/{method}.json of every aligned row", multiple=True),
        "samples": File("metrics/samples/{method}.parquet of every aligned row, same order", multiple=True),
    },
    outputs={
        "csv": "tables/rq3.csv (each aligned row, each metric with `_lo`, `_hi` bounds)",
        "md": "tables/rq3.md (Table 5 and F_x - B_x per algorithm)",
        "paired_csv": "tables/rq3_paired.csv (F_x - B_x per algorithm and metric, paired bootstrap or jackknife)",
    },
    params={
        "methods": Param("aligned row of each metrics file, in order"),
        "metrics_settings": Param("cut-offs and bootstrap settings", block="metrics"),
    },
    wildcards={"dataset": "dataset name (the table's title)"},
)

if __name__ == "__main__":
    STAGE.main(globals().get("snakemake"))

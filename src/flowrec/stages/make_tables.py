"""Stage make_tables: one dataset's result table (a row per method, the paper's columns first, each with
its interval) and every method's paired comparison with BIGRec (table and figure).

Written as CSV (full precision) and Markdown (rounded as in the paper's tables). The paired comparison
resamples (HR/NDCG: bootstrap) or deletes (the set statistics: jackknife) the same test samples for
both methods (flowrec.sample_metrics.paired_differences, with the `metrics` block's interval
settings); docs/method.md section 6.
"""

import logging
from pathlib import Path

import pandas as pd

from flowrec.cli import File, Param, Stage
from flowrec.io import atomic_path, write_text
from flowrec.metrics import MetricsSettings
from flowrec.report import method_label, read_metrics, results_table, to_markdown, with_intervals
from flowrec.report_paired import paired_comparisons, paired_markdown, paired_table, plot_paired_differences
from flowrec.settings import settings_from_block

log = logging.getLogger(__name__)


def make_tables(
    metrics: list[str],
    samples: list[str],
    csv: str,
    md: str,
    paired_csv: str,
    paired_figure: str,
    methods: list[str] | None,
    metrics_settings: dict,
    baseline: str,
    dataset: str,
) -> None:
    """Tables of the metrics files and per-sample files, one of each per method (`methods` in the order
    of the files; None: the file names, metrics/{method}.json)."""
    methods = methods if methods is not None else [Path(p).stem for p in metrics]
    if baseline not in methods:
        raise ValueError(f"make_tables: baseline {baseline!r} is not among the methods {methods}")
    settings = settings_from_block(MetricsSettings, metrics_settings, "metrics")
    by_method = read_metrics(dict(zip(methods, metrics, strict=True)))
    per_sample = {m: pd.read_parquet(p) for m, p in zip(methods, samples, strict=True)}
    table = results_table(by_method)
    pairs = {m: (m, baseline) for m in methods if m != baseline}
    long = paired_table(paired_comparisons(pairs, by_method, per_sample, settings))
    label = method_label(baseline)
    title = f"Results on {dataset}"
    level = (
        f"{settings.confidence:.0%} intervals over the test samples: HR and NDCG percentile bootstrap "
        f"({settings.bootstrap_draws} draws), the other metrics grouped jackknife "
        f"({settings.jackknife_groups} groups at most)"
    )
    with atomic_path(csv) as tmp:
        table.to_csv(tmp)
    with atomic_path(paired_csv) as tmp:
        long.to_csv(tmp, index=False)
    text = to_markdown(with_intervals(table), title) + f"\n{level}.\n\n"
    write_text(text + paired_markdown(long, label, settings.confidence), md)
    plot_paired_differences(long, paired_figure, label, title=dataset)
    log.info("%s\n%s\n%s", title, table.to_string(), long.to_string())


STAGE = Stage(
    run=make_tables,
    doc=__doc__,
    inputs={
        "metrics": File("metrics/{method}.json of every method", multiple=True),
        "samples": File("metrics/samples/{method}.parquet of every method, same order", multiple=True),
    },
    outputs={
        "csv": "tables/results.csv (each metric with `_lo`, `_hi` bounds)",
        "md": "tables/results.md (the table and the paired comparison with the baseline)",
        "paired_csv": "tables/paired.csv (method - baseline per metric, paired bootstrap or jackknife)",
        "paired_figure": "figures/paired_differences.png",
    },
    params={
        "methods": Param("method of each metrics file, in order (default: the file names)"),
        "metrics_settings": Param("cut-offs and interval settings", block="metrics"),
        "baseline": Param("the method every other is compared with", default="bigrec"),
    },
    wildcards={"dataset": "dataset name (the table's title)"},
)

if __name__ == "__main__":
    STAGE.main(globals().get("snakemake"))

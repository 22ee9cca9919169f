"""Rules make_tables and make_combined_table: the result tables as CSV and Markdown."""

import pandas as pd

from flowrec.logs import log_to
from flowrec.report import combined_table, read_metrics, results_table, write_table


def main(snakemake) -> None:
    log = log_to(snakemake.log[0])
    if snakemake.rule == "make_combined_table":
        tables = {
            d: pd.read_csv(p, index_col="Method")
            for d, p in zip(snakemake.params.datasets, snakemake.input.tables, strict=True)
        }
        table = combined_table(tables)
        title = "Results over datasets"
    else:
        metrics = read_metrics(dict(zip(snakemake.params.methods, snakemake.input.metrics, strict=True)))
        table = results_table(metrics)
        title = f"Results on {snakemake.wildcards.dataset}"
    write_table(table, snakemake.output.csv, snakemake.output.md, title=title)
    log.info("%s\n%s", title, table.to_string())


if __name__ == "__main__":  # Snakemake runs a script: as __main__
    main(snakemake)  # noqa: F821

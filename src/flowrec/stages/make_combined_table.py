"""Stage make_combined_table: the result tables of every dataset side by side (CSV and Markdown)."""

import logging
from pathlib import Path

import pandas as pd

from flowrec.cli import File, Param, Stage
from flowrec.report import combined_table, write_table

log = logging.getLogger(__name__)


def make_combined_table(tables: list[str], csv: str, md: str, datasets: list[str] | None) -> None:
    """Combine the per-dataset tables (`datasets` in the order of the files; None: the dataset folder of
    each file, results/{dataset}/tables/results.csv)."""
    datasets = datasets if datasets is not None else [Path(p).parent.parent.name for p in tables]
    frames = {d: pd.read_csv(p, index_col="Method") for d, p in zip(datasets, tables, strict=True)}
    table = combined_table(frames)
    title = "Results over datasets"
    write_table(table, csv, md, title=title)
    log.info("%s\n%s", title, table.to_string())


STAGE = Stage(
    run=make_combined_table,
    doc=__doc__,
    inputs={"tables": File("results/{dataset}/tables/results.csv of every dataset", multiple=True)},
    outputs={"csv": "tables/all.csv", "md": "tables/all.md"},
    params={"datasets": Param("dataset of each table, in order (default: the dataset folders)")},
)

if __name__ == "__main__":
    STAGE.main(globals().get("snakemake"))

"""Stage make_tables: one dataset's result table (a row per method, the paper's columns first).

Written as CSV (full precision) and Markdown (rounded as in the paper's tables).
"""

import logging
from pathlib import Path

from flowrec.cli import File, Param, Stage
from flowrec.report import read_metrics, results_table, write_table

log = logging.getLogger(__name__)


def make_tables(metrics: list[str], csv: str, md: str, methods: list[str] | None, dataset: str) -> None:
    """Table of the metrics files, one per method (`methods` in the order of the files; None: the file
    names, metrics/{method}.json)."""
    methods = methods if methods is not None else [Path(p).stem for p in metrics]
    table = results_table(read_metrics(dict(zip(methods, metrics, strict=True))))
    title = f"Results on {dataset}"
    write_table(table, csv, md, title=title)
    log.info("%s\n%s", title, table.to_string())


STAGE = Stage(
    run=make_tables,
    doc=__doc__,
    inputs={"metrics": File("metrics/{method}.json of every method", multiple=True)},
    outputs={"csv": "tables/results.csv", "md": "tables/results.md"},
    params={"methods": Param("method of each metrics file, in order (default: the file names)")},
    wildcards={"dataset": "dataset name (the table's title)"},
)

if __name__ == "__main__":
    STAGE.main(globals().get("snakemake"))

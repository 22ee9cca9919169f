"""Stage afl_table: AFL's recommendation (HR@1) and user-simulation (P/R/F1) tables, CSV and Markdown
(docs/method.md section 9)."""

from flowrec.afl.tables import write_tables
from flowrec.cli import File, Stage


def run(recommend: list[str], simulate: list[str], csv: str, md: str) -> None:
    write_tables(recommend, simulate, csv, md)


STAGE = Stage(
    run=run,
    doc=__doc__,
    inputs={
        "recommend": File("afl/recommend/{recmodel}/{variant}.json files", multiple=True),
        "simulate": File("afl/simulate/{variant}.json files", multiple=True),
    },
    outputs={"csv": "afl/table.csv", "md": "afl/table.md"},
)

if __name__ == "__main__":
    STAGE.main(globals().get("snakemake"))

"""Stage afl_candidates: a seeded subset of test users, their candidate lists (the true next item once,
sampled negatives outside the history) and the items each user agent judges (docs/method.md section 9)."""

import logging

from flowrec.afl.candidates import candidate_lists, choose_rows, simulation_items
from flowrec.afl.data import AflSettings, read_split_and_titles, write_candidates
from flowrec.cli import Param, Stage
from flowrec.settings import settings_from_block

log = logging.getLogger(__name__)


def run(test: str, item_table: str, candidates: str, afl: dict, dataset: str) -> None:
    settings = settings_from_block(AflSettings, afl, "afl")
    log.info("afl_candidates %s: %s", dataset, settings)
    split, titles = read_split_and_titles(test, item_table)
    rows = choose_rows(len(split), settings.users, settings.seed)
    lists = candidate_lists(split, rows, len(titles), settings.n_candidates, settings.seed)
    judged = simulation_items(split, rows, len(titles), max(settings.ratios), settings.seed)
    write_candidates(candidates, rows, lists, judged)
    log.info("afl_candidates: %d users x %d candidates, %d judged items each", *lists.shape, judged.shape[1])


STAGE = Stage(
    run=run,
    doc=__doc__,
    inputs={"test": "data/test.parquet", "item_table": "data/items.parquet"},
    outputs={"candidates": "afl/candidates.parquet (docs/formats.md)"},
    params={"afl": Param("AFL settings (users, n_candidates, ratios, seed)", block="afl")},
    wildcards={"dataset": "dataset name (for the log)"},
)

if __name__ == "__main__":
    STAGE.main(globals().get("snakemake"))

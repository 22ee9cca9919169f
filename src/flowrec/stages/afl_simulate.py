"""Stage afl_simulate: one user-simulation row of AFL (docs/method.md section 9): precision, recall and
F1 of "yes" at every positive:negative ratio for the reward model, the user agent or AFL."""

import logging

from flowrec.afl.backends import BackendSettings
from flowrec.afl.data import AflSettings
from flowrec.afl.run import simulate
from flowrec.cli import Param, Stage
from flowrec.settings import settings_from_block

log = logging.getLogger(__name__)


def run(
    test: str, valid: str, item_table: str, candidates: str, p_ui_test: str, p_ui_valid: str, metrics: str,
    afl: dict, backend: dict, cache: str, domain: str, variant: str, dataset: str, threads: int,
) -> dict:  # fmt: skip
    settings = settings_from_block(AflSettings, afl, "afl")
    backend_settings = settings_from_block(BackendSettings, backend, "afl.backend")
    log.info("afl_simulate %s %s: %s, %s", dataset, variant, settings, backend_settings)
    return simulate(
        variant, test, valid, item_table, candidates, p_ui_test, p_ui_valid, metrics,
        settings, backend_settings, cache, domain, threads,
    )  # fmt: skip


STAGE = Stage(
    run=run,
    doc=__doc__,
    inputs={
        "test": "data/test.parquet",
        "valid": "data/valid.parquet",
        "item_table": "data/items.parquet",
        "candidates": "afl/candidates.parquet",
        "p_ui_test": "sasrec/p_ui_test.npy (the reward model)",
        "p_ui_valid": "sasrec/p_ui_valid.npy (its threshold)",
    },
    outputs={"metrics": "afl/simulate/{variant}.json"},
    params={
        "afl": Param("AFL settings (max_rounds, ratios, valid_users, seed)", block="afl"),
        "backend": Param("the LLM backend", block="afl.backend"),
        "cache": Param("LLM call cache folder", block="afl.cache"),
        "domain": Param("movie or product (prompt wording)", default="movie"),
    },
    wildcards={"variant": "reward_model|user_agent|afl", "dataset": "dataset name"},
)

if __name__ == "__main__":
    STAGE.main(globals().get("snakemake"))

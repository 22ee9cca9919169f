"""Stage afl_recommend: one HR@1 row of AFL for one recommendation model (docs/method.md section 9):
base (the model alone), agent (one round), afl (the loop) or an ablation."""

import logging

from flowrec.afl.backends import BackendSettings
from flowrec.afl.data import AflSettings
from flowrec.afl.run import recommend
from flowrec.cli import Param, Stage
from flowrec.settings import settings_from_block

log = logging.getLogger(__name__)


def run(
    test: str, item_table: str, candidates: str, rec_p_ui: str, reward_p_ui: str, outcomes: str,
    metrics: str, afl: dict, backend: dict, cache: str, domain: str, variant: str, recmodel: str,
    dataset: str, threads: int,
) -> dict:  # fmt: skip
    settings = settings_from_block(AflSettings, afl, "afl")
    backend_settings = settings_from_block(BackendSettings, backend, "afl.backend")
    log.info("afl_recommend %s %s %s: %s, %s", dataset, recmodel, variant, settings, backend_settings)
    return recommend(
        variant, test, item_table, candidates, rec_p_ui, reward_p_ui, outcomes, metrics,
        settings, backend_settings, cache, domain, threads,
    )  # fmt: skip


STAGE = Stage(
    run=run,
    doc=__doc__,
    inputs={
        "test": "data/test.parquet",
        "item_table": "data/items.parquet",
        "candidates": "afl/candidates.parquet",
        "rec_p_ui": "p_ui_test.npy of the recommendation model",
        "reward_p_ui": "sasrec/p_ui_test.npy (the reward model)",
    },
    outputs={
        "outcomes": "afl/recommend/{recmodel}/{variant}.parquet",
        "metrics": "afl/recommend/{recmodel}/{variant}.json",
    },
    params={
        "afl": Param("AFL settings (max_rounds)", block="afl"),
        "backend": Param("the LLM backend", block="afl.backend"),
        "cache": Param("LLM call cache folder", block="afl.cache"),
        "domain": Param("movie or product (prompt wording)", default="movie"),
    },
    wildcards={
        "variant": "base|agent|afl|afl_norec|afl_noreward|afl_none",
        "recmodel": "sasrec|gru4rec|caser",
        "dataset": "dataset name",
    },
)

if __name__ == "__main__":
    STAGE.main(globals().get("snakemake"))

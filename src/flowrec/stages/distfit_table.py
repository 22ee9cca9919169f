"""Stage distfit_table: title- and token-level KL(T||R), KL(R||T) and JS of every method (the RQ1 table,
docs/method.md section 6), with the tuning set itself as the sampling-noise floor."""

import logging

from flowrec.cli import File, Param, Stage
from flowrec.distfit.evaluate import divergence_table
from flowrec.distfit.files import read_samples, read_target, read_title_probs
from flowrec.distfit.methods import METHODS, TUNING_SET
from flowrec.metrics import MetricsSettings
from flowrec.report import to_markdown, with_intervals, write_table
from flowrec.settings import settings_from_block
from flowrec.trie import Trie

log = logging.getLogger(__name__)


def write_divergence_table(
    target: str,
    trie: str,
    tuning_set: str,
    samples: list[str],
    probs: list[str],
    csv: str,
    md: str,
    methods: list[str],
    metrics: dict,
    dataset: str,
) -> None:
    """The divergence of the tuning set and of each method's samples from T, as CSV and Markdown, the
    sampled columns with grouped-jackknife intervals (the `metrics` block's interval settings)."""
    settings = settings_from_block(MetricsSettings, metrics, "metrics")
    jackknife = (settings.jackknife_groups, settings.bootstrap_seed, settings.confidence)
    counts = read_target(target)
    sampled = {TUNING_SET: read_samples(tuning_set)}
    exact = {}
    for method, path, prob in zip(methods, samples, probs, strict=True):
        sampled[method] = read_samples(path)
        exact[method] = read_title_probs(prob)
    table = divergence_table(counts, sampled, Trie.load(trie), exact, jackknife)
    title = f"Distribution fitting on {dataset}: {len(counts)} target titles"
    write_table(table, csv, md, title)
    log.info("\n%s", to_markdown(with_intervals(table), title))


STAGE = Stage(
    run=write_divergence_table,
    doc=__doc__,
    inputs={
        "target": "distfit/target.json",
        "trie": "distfit/trie.npz (token paths of the titles)",
        "tuning_set": "distfit/tuning_set.parquet",
        "samples": File(
            "distfit/samples/{method}.parquet of every method, in `methods` order", multiple=True
        ),
        "probs": File("distfit/probs/{method}.parquet of every method, in `methods` order", multiple=True),
    },
    outputs={"csv": "distfit/table.csv", "md": "distfit/table.md"},
    params={
        "methods": Param("the methods of `samples` and `probs`, in order", default=list(METHODS)),
        "metrics": Param("interval settings (jackknife_groups, bootstrap_seed, confidence)", block="metrics"),
    },
    wildcards={"dataset": "dataset name (in the table's title)"},
)

if __name__ == "__main__":
    STAGE.main(globals().get("snakemake"))

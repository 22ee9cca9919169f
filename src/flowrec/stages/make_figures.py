"""Rule make_figures: popularity-group shares per method (paper Figure 2) and Flower's training curves."""

import json
from pathlib import Path

import pandas as pd

from flowrec.logs import log_to
from flowrec.report import plot_popularity_groups, plot_training_curves, read_metrics


def main(snakemake) -> None:
    log = log_to(snakemake.log[0])
    dataset = snakemake.wildcards.dataset
    metrics = read_metrics(dict(zip(snakemake.params.methods, snakemake.input.metrics, strict=True)))
    shares = json.loads(Path(snakemake.input.group_shares).read_text())["shares"]
    k = plot_popularity_groups(metrics, shares, snakemake.output.popularity, title=dataset)
    log.info("popularity groups at top-%d -> %s", k, snakemake.output.popularity)
    training_log = pd.read_csv(snakemake.input.flower_log)
    plot_training_curves(training_log, snakemake.output.training, title=f"Flower training on {dataset}")
    log.info("%d log rows -> %s", len(training_log), snakemake.output.training)


if __name__ == "__main__":  # Snakemake runs a script: as __main__
    main(snakemake)  # noqa: F821

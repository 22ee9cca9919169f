"""Stage make_figures: popularity-group shares per method (the paper's Figure 2) and Flower's training
curves."""

import json
import logging
from pathlib import Path

import pandas as pd

from flowrec.cli import File, Param, Stage
from flowrec.report import plot_popularity_groups, plot_training_curves, read_metrics

log = logging.getLogger(__name__)


def make_figures(
    metrics: list[str],
    group_shares: str,
    flower_log: str,
    popularity: str,
    training: str,
    methods: list[str] | None,
    dataset: str,
) -> None:
    """Draw both figures (`methods` in the order of the metrics files; None: the file names)."""
    methods = methods if methods is not None else [Path(p).stem for p in metrics]
    by_method = read_metrics(dict(zip(methods, metrics, strict=True)))
    shares = json.loads(Path(group_shares).read_text())["shares"]
    k = plot_popularity_groups(by_method, shares, popularity, title=dataset)
    log.info("popularity groups at top-%d -> %s", k, popularity)
    training_log = pd.read_csv(flower_log)
    plot_training_curves(training_log, training, title=f"Flower training on {dataset}")
    log.info("%d log rows -> %s", len(training_log), training)


STAGE = Stage(
    run=make_figures,
    doc=__doc__,
    inputs={
        "metrics": File("metrics/{method}.json of every method", multiple=True),
        "group_shares": "trie/groups.json (the group shares of the training histories)",
        "flower_log": "tune/flower/log.csv (Flower's training log)",
    },
    outputs={
        "popularity": "figures/popularity_groups.png",
        "training": "figures/flower_training.png",
    },
    params={"methods": Param("method of each metrics file, in order (default: the file names)")},
    wildcards={"dataset": "dataset name (the figures' titles)"},
)

if __name__ == "__main__":
    STAGE.main(globals().get("snakemake"))

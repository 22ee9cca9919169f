"""Data stage: from a source (MovieLens-100K, Amazon 2018, an imported D3 split) to the canonical files.

`prepare(settings, inputs)` returns the items table, the three splits and the statistics;
`write_prepared` writes them as docs/formats.md "Data stage" specifies.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from flowrec.data.amazon import load_amazon
from flowrec.data.d3_export import write_d3_csv
from flowrec.data.interop import import_d3
from flowrec.data.movielens import load_movielens
from flowrec.data.protocol import SPLITS, build_dataset, window_bounds
from flowrec.data.settings import DatasetSettings
from flowrec.io import write_json, write_parquet

__all__ = ["PreparedData", "prepare", "write_prepared", "SAMPLE_COLUMNS"]
log = logging.getLogger("flowrec.data")
SAMPLE_COLUMNS = ["user", "history", "target", "timestamp"]  # the Parquet contract of a split


@dataclass
class PreparedData:
    items: pa.Table  # item_id, title, source_id
    splits: dict[str, pa.Table]  # SAMPLE_COLUMNS (+ history_timestamp, history_rating, rating for D3)
    stats: dict


def prepare(settings: DatasetSettings, inputs: dict[str, str]) -> PreparedData:
    """Run the data protocol for one dataset.

    `inputs` by source: movielens {"inter", "item"}; amazon {"reviews", "meta"}; import {"train", ...}
    (only its folder, settings.import_dir, is read).
    """
    drops: Counter = Counter()
    if settings.source == "import":
        items, splits, stats = import_d3(settings.import_dir, settings.max_history, settings.seed)
        return PreparedData(items, splits, stats)
    if settings.source == "movielens":
        inter, titles = load_movielens(inputs["inter"], inputs["item"], settings.max_title_words, drops)
    elif settings.source == "amazon":
        low, high = window_bounds(settings)
        if settings.widen_window_min_items is not None:
            low = None  # the window may widen backwards: keep the earlier reviews too
        inter, titles = load_amazon(
            inputs["reviews"],
            inputs["meta"],
            settings.max_title_words,
            drops,
            low,
            high,
            settings.title_cleaning,
        )
    else:
        raise ValueError(f"source {settings.source!r}: expected movielens, amazon or import")
    items, splits, stats = build_dataset(inter, titles, settings, drops)
    log.info(
        "%s: %d users, %d items, %d interactions, samples %s",
        settings.source,
        stats["users"],
        stats["items"],
        stats["interactions"],
        stats["samples"],
    )
    return PreparedData(items, splits, stats)


def write_prepared(data: PreparedData, out: dict[str, str | Path]) -> None:
    """Write items, the three splits (contract columns), stats.json and the D3 CSVs (atomic writes).

    `out` keys: items, train, valid, test, stats, d3_train, d3_valid, d3_test.
    """
    write_parquet(data.items, out["items"])
    for name in SPLITS:
        write_parquet(data.splits[name].select(SAMPLE_COLUMNS), out[name])
        write_d3_csv(data.splits[name], data.items, out[f"d3_{name}"])
    write_json(data.stats, out["stats"])

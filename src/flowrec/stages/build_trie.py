"""Stage build_trie: trie over the dataset's titles, R(i) from train histories, popularity groups.

Outputs (docs/formats.md): trie/trie.npz, groups.parquet, groups.json. trie.granularity is not a
param: the loss applies it (docs/method.md section 3).
"""

import logging
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from flowrec.cli import Param, Stage
from flowrec.groups import (
    group_shares,
    groups_table,
    popularity_groups,
    title_first_seen,
    title_history_counts,
)
from flowrec.io import read_items, write_json, write_parquet
from flowrec.model import load_tokenizer
from flowrec.trie import Trie, build_trie

log = logging.getLogger(__name__)


def read_item_titles(path: str | Path) -> list[str]:
    """Titles indexed by item id (flowrec.io.read_items checks the ids are 0..N-1); every item has one."""
    items = read_items(path, columns=["item_id", "title"])
    missing = items.loc[items["title"].isna(), "item_id"].tolist()
    if missing:
        raise ValueError(f"{path}: items {missing[:5]} have no title")
    return items["title"].tolist()


def build(
    items_path: str | Path, train_path: str | Path, model: str, n_groups: int
) -> tuple[Trie, pa.Table, dict]:
    """(trie with R(i) from train histories, groups table, groups.json dict)."""
    item_titles = read_item_titles(items_path)
    histories = pq.read_table(train_path, columns=["history"]).column("history")
    tokenizer = load_tokenizer(model)
    trie = build_trie(item_titles, tokenizer, histories)
    frequency = title_history_counts(histories, trie.item_title, trie.n_titles)
    first_seen = title_first_seen(histories, trie.item_title, trie.n_titles)  # ties: first appearance
    try:
        groups = popularity_groups(frequency, n_groups, first_seen)
    except ValueError as err:  # the group count the catalogue cannot fill: name the files it comes from
        raise ValueError(f"{items_path} + {train_path}: {err}") from err
    shares = group_shares(frequency, groups, n_groups)
    return (
        trie,
        groups_table(trie.titles, frequency, groups),
        {"shares": shares.tolist(), "n_groups": n_groups},
    )


def make_trie(
    item_table: str, train: str, trie: str, groups: str, groups_json: str, model: str, n_groups: int
) -> None:
    """Build the trie and the popularity groups, and write the three outputs."""
    start = time.perf_counter()
    built, table, shares = build(item_table, train, model, int(n_groups))
    log.info(
        "trie: %d items, %d titles, %d nodes, %d edges, max depth %d, %d titles with zero flow, built in %.1f s",
        built.n_items,
        built.n_titles,
        built.n_nodes,
        built.n_edges,
        int(built.depth.max()),
        int((built.title_reward == 0).sum()),
        time.perf_counter() - start,
    )
    log.info("group shares: %s", [round(s, 4) for s in shares["shares"]])
    built.save(trie)
    write_parquet(table, groups)
    write_json(shares, groups_json)


STAGE = Stage(
    run=make_trie,
    doc=__doc__,
    inputs={"item_table": "data/items.parquet", "train": "data/train.parquet"},
    outputs={
        "trie": "trie/trie.npz",
        "groups": "trie/groups.parquet (title, title_id, frequency, group)",
        "groups_json": "trie/groups.json (group shares of the train histories)",
    },
    params={
        "model": Param("model name_or_path (its tokenizer tokenizes the titles)", block="model.name_or_path"),
        "n_groups": Param("popularity groups", block="trie.n_groups"),
    },
)

if __name__ == "__main__":
    STAGE.main(globals().get("snakemake"))

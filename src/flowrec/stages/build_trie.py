"""Stage build_trie: trie over the dataset's titles, R(i) from train histories, popularity groups.

Inputs: results/{dataset}/data/items.parquet and train.parquet. Outputs (docs/formats.md):
results/{dataset}/trie/trie.npz, groups.parquet, groups.json. Params: model (name_or_path, for the
tokenizer) and n_groups (config trie.n_groups). trie.granularity is not a param: the loss applies it.
"""

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from flowrec.groups import group_shares, groups_table, popularity_groups, title_history_counts
from flowrec.io import write_json, write_parquet
from flowrec.logs import log_to
from flowrec.model import load_tokenizer
from flowrec.trie import Trie, build_trie


def read_item_titles(path: str | Path) -> list[str]:
    """Titles indexed by item id; items.parquet must hold item ids 0..N-1."""
    table = pq.read_table(path, columns=["item_id", "title"])
    ids = table.column("item_id").to_numpy()
    order = np.argsort(ids, kind="stable")
    if not np.array_equal(ids[order], np.arange(len(ids))):
        raise ValueError(f"{path}: column item_id must hold 0..{len(ids) - 1} exactly once each")
    titles = table.column("title").to_pylist()
    missing = [int(ids[i]) for i in order if titles[i] is None]
    if missing:
        raise ValueError(f"{path}: items {missing[:5]} have no title")
    return [titles[i] for i in order]


def build(
    items_path: str | Path, train_path: str | Path, model: str, n_groups: int
) -> tuple[Trie, pa.Table, dict]:
    """(trie with R(i) from train histories, groups table, groups.json dict)."""
    item_titles = read_item_titles(items_path)
    histories = pq.read_table(train_path, columns=["history"]).column("history")
    tokenizer = load_tokenizer(model)
    trie = build_trie(item_titles, tokenizer, histories)
    frequency = title_history_counts(histories, trie.item_title, trie.n_titles)
    groups = popularity_groups(frequency, n_groups)
    shares = group_shares(frequency, groups, n_groups)
    return (
        trie,
        groups_table(trie.titles, frequency, groups),
        {"shares": shares.tolist(), "n_groups": n_groups},
    )


def main(snakemake) -> None:
    log = log_to(snakemake.log[0])
    start = time.perf_counter()
    trie, table, groups_json = build(
        snakemake.input.items_table,
        snakemake.input.train,
        snakemake.params.model,
        int(snakemake.params.n_groups),
    )
    log.info(
        "trie: %d items, %d titles, %d nodes, %d edges, max depth %d, %d titles with zero flow, built in %.1f s",
        trie.n_items,
        trie.n_titles,
        trie.n_nodes,
        trie.n_edges,
        int(trie.depth.max()),
        int((trie.title_reward == 0).sum()),
        time.perf_counter() - start,
    )
    log.info("group shares: %s", [round(s, 4) for s in groups_json["shares"]])
    trie.save(snakemake.output.trie)
    write_parquet(table, snakemake.output.groups)
    write_json(groups_json, snakemake.output.groups_json)


if __name__ == "__main__":  # Snakemake runs a script: as __main__
    main(snakemake)  # noqa: F821

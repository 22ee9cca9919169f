"""Import of an existing split in the D3/BIGRec interop CSV (docs/method.md section 2); the export of
our splits in that format is flowrec.data.d3_export.

Columns: user_id, item_asins, item_asin, history_item_id, item_id, history_item_title, item_title,
history_rating, rating, history_timestamp, timestamp; list cells are Python literals
(`['a', "b's"]`), as the published BIGRec/D3/Flower code writes them with pandas.
"""

from __future__ import annotations

import ast
import csv
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from flowrec.data.import_checks import (
    check_history_titles,
    check_ids_in_range,
    check_integer_lists,
    check_rows,
    check_titles,
    history_title_mismatches,
    integer_ids,
    list_extras,
    overlaps,
    read_csv_named,
)
from flowrec.data.protocol import SPLITS, clean_title

log = logging.getLogger("flowrec.data")


def _parse_list(cell: str, ints: bool) -> object:
    if ints:
        try:  # integer lists are valid JSON, and json is several times faster than ast on them
            return json.loads(cell)
        except ValueError:
            pass
    return ast.literal_eval(cell)


def _literal_lists(column: pd.Series, path: Path, name: str, ints: bool) -> list[list]:
    """Parse Python-literal list cells; an error names the file, line and column."""
    out = []
    for row, cell in enumerate(column):
        try:
            value = _parse_list(cell, ints)
        except (ValueError, SyntaxError) as err:
            raise ValueError(f"{path}:{row + 2}: column {name}: {cell[:80]!r} is not a list literal") from err
        if not isinstance(value, list):
            raise ValueError(f"{path}:{row + 2}: column {name}: expected a list, got {cell[:80]!r}")
        out.append(value)
    return out


def _read_split(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing (source import needs train.csv, valid.csv, test.csv)")
    frame = read_csv_named(path, dtype=str, keep_default_na=False)
    for name in ("history_item_title", "item_title"):
        if name not in frame.columns:
            raise ValueError(f"{path}: column {name} missing; columns are {list(frame.columns)}")
    check_rows(frame, path)
    check_titles(frame["item_title"], path, "item_title")
    return frame


def _read_items(path: Path) -> pd.DataFrame:
    frame = read_csv_named(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)
    if list(frame.columns[:2]) != ["item_id", "item_title"]:
        raise ValueError(f"{path}: expected header item_id<TAB>item_title, got {list(frame.columns)}")
    check_titles(frame["item_title"], path, "item_title")
    ids = pd.to_numeric(frame["item_id"], errors="coerce")
    if ids.isna().any():
        raise ValueError(f"{path}:{int(ids.isna().to_numpy().argmax()) + 2}: item_id is not an integer")
    return pd.DataFrame({"item_id": ids.astype(np.int64), "title": frame["item_title"]})


def _extra_columns(frame: pd.DataFrame, extras: dict, offsets: pa.Array, max_history: int) -> dict:
    """rating, history_rating and history_timestamp of an imported split (histories cut like the ids),
    carried into the D3 export; absent when the file lacks them."""
    out = {}
    if "rating" in frame and (frame["rating"] != "").any():
        out["rating"] = pa.array(pd.to_numeric(frame["rating"], errors="coerce").to_numpy(np.float64))
    for column, typ in (("history_rating", pa.float64()), ("history_timestamp", pa.int64())):
        if extras[column] is not None:
            flat = [v for row in extras[column] for v in row[-max_history:]]
            out[column] = pa.ListArray.from_arrays(offsets, pa.array(flat, typ))
    return out


def _collect_asins(
    asins: dict[int, str],
    target: np.ndarray,
    item_asin: pd.Series | None,
    history: list[list[int]],
    item_asins: list[list[str]] | None,
    warnings: Counter,
) -> None:
    """Record the ASIN of each item id the split names (item_asin, item_asins); count conflicts."""
    pairs = []
    if item_asin is not None:
        pairs += [(int(i), a) for i, a in zip(target, item_asin, strict=True) if a]
    if item_asins is not None:
        pairs += [
            (i, a)
            for ids, row in zip(history, item_asins, strict=True)
            for i, a in zip(ids, row, strict=True)
        ]
    for item, asin in pairs:
        if asins.setdefault(item, asin) != asin:
            warnings["item_ids_with_two_asins"] += 1


def import_d3(
    import_dir: str | Path, max_history: int, seed: int
) -> tuple[pa.Table, dict[str, pa.Table], dict]:
    """(items, {split: samples}, stats) from import_dir/{train,valid,test}.csv (+ optional items.tsv).

    Ids: history_item_id/item_id when every file has them (with items.tsv, or else the (id, title)
    pairs seen, which must then cover 0..N-1); otherwise titles are mapped to items: the smallest
    item_id with that title from items.tsv, or, without items.tsv, the distinct titles seen, sorted
    and shuffled with `seed`. Histories keep their last `max_history` items. Rows keep file order.
    """
    folder = Path(import_dir)
    frames = {name: _read_split(folder / f"{name}.csv") for name in SPLITS}
    items_path = folder / "items.tsv"
    with_ids = all({"history_item_id", "item_id"} <= set(f.columns) for f in frames.values())
    lists = {
        name: _literal_lists(
            f["history_item_id"] if with_ids else f["history_item_title"],
            folder / f"{name}.csv",
            "history_item_id" if with_ids else "history_item_title",
            ints=with_ids,
        )
        for name, f in frames.items()
    }
    targets: dict[str, np.ndarray] = {}
    if with_ids:
        for name, frame in frames.items():
            path = folder / f"{name}.csv"
            targets[name] = integer_ids(frame["item_id"], path, "item_id")
            check_integer_lists(lists[name], path, "history_item_id")
    else:
        for name in SPLITS:
            check_history_titles(lists[name], folder / f"{name}.csv")
    warnings: Counter = Counter()
    overlaps(frames, folder, warnings)
    stats_drops: dict[str, int] = {}
    if items_path.exists():
        items = _read_items(items_path)
        if not np.array_equal(np.sort(items["item_id"].to_numpy()), np.arange(len(items))):
            raise ValueError(f"{items_path}: item_id must be 0..N-1 (got {len(items)} rows)")
        items = items.sort_values("item_id").reset_index(drop=True)
    elif with_ids:
        for name in SPLITS:  # the catalogue is built from these ids: a negative one would become an item
            check_ids_in_range(targets[name], folder / f"{name}.csv", "item_id", None, "")
        pairs = (
            pd.concat(
                [
                    pd.DataFrame({"item_id": targets[name], "title": f["item_title"]})
                    for name, f in frames.items()
                ]
            )
            .drop_duplicates()
            .sort_values("item_id", kind="stable")
        )
        retitled = int(pairs["item_id"].duplicated().sum())
        if retitled:  # the first title of each id wins (file order: train, valid, test)
            warnings["item_ids_with_two_titles"] = retitled
            log.warning("%s: %d item ids appear with more than one item_title", folder, retitled)
        pairs = pairs.drop_duplicates("item_id")
        missing = np.setdiff1d(np.arange(pairs["item_id"].max() + 1), pairs["item_id"].to_numpy())
        if len(missing):
            raise ValueError(
                f"{folder}: no items.tsv and ids {missing[:5].tolist()}... never appear as item_id"
            )
        items = pairs.reset_index(drop=True)
    else:
        seen = set()
        for name, frame in frames.items():
            seen.update(frame["item_title"])
            for row in lists[name]:
                seen.update(row)
        ordered = np.array(sorted(seen), dtype=object)[np.random.default_rng(seed).permutation(len(seen))]
        items = pd.DataFrame({"item_id": np.arange(len(ordered), dtype=np.int64), "title": ordered})
    n_items = len(items)
    if items_path.exists():
        catalogue = str(items_path)
    elif with_ids:
        catalogue = f"the item_id column of {folder}/{{train,valid,test}}.csv (no items.tsv)"
    else:
        catalogue = "the titles of the split"
    junk = sum(clean_title(t, 10**9, "flowrec")[1] == "title_html" for t in items["title"])
    if junk:
        stats_drops["imported_items_with_html_title_kept"] = int(junk)
        log.warning(
            "%s: %d item titles contain HTML markup (kept: the split is imported as is)", folder, junk
        )
    id_of_title = items.sort_values("item_id").drop_duplicates("title").set_index("title")["item_id"]

    splits = {}
    asins: dict[int, str] = {}  # item id -> ASIN, where the files name it
    for name, frame in frames.items():
        path = folder / f"{name}.csv"
        if with_ids:
            target = targets[name]
            history = lists[name]
        else:
            known = frame["item_title"].isin(id_of_title.index)
            if not known.all():
                line = int((~known).to_numpy().argmax()) + 2
                raise ValueError(
                    f"{path}:{line}: item_title {frame['item_title'][~known].iloc[0]!r} is no item"
                )
            target = id_of_title.loc[frame["item_title"]].to_numpy(np.int64)
            try:
                history = [id_of_title.loc[row].tolist() for row in lists[name]]
            except KeyError as err:
                raise ValueError(f"{path}: history_item_title names an unknown title {err}") from err
        # Before any use of the ids (the list extras, the titles of history ids index with them).
        check_ids_in_range(target, path, "item_id", n_items, catalogue)
        check_ids_in_range(history, path, "history_item_id", n_items, catalogue)
        full_lengths = np.fromiter((len(r) for r in history), np.int64, len(history))
        extras = list_extras(frame, path, full_lengths)
        full_history, history = history, [row[-max_history:] for row in history]
        lengths = np.fromiter((len(r) for r in history), np.int64, len(history))
        flat = np.fromiter((i for r in history for i in r), np.int64, int(lengths.sum()))
        if with_ids:
            history_title_mismatches(
                frame, lists[name], items["title"].to_numpy(object), path, warnings, name
            )
        offsets = pa.array(np.r_[0, np.cumsum(lengths)], pa.int64())
        user = (
            frame["user_id"].where(frame["user_id"] != "", None)
            if "user_id" in frame
            else [None] * len(frame)
        )
        stamp = (
            pd.to_numeric(frame["timestamp"], errors="coerce").astype("Int64")
            if "timestamp" in frame
            else pd.array([None] * len(frame), dtype="Int64")
        )
        splits[name] = pa.table(
            {
                "user": pa.array(list(user), pa.string()),
                "history": pa.ListArray.from_arrays(offsets, pa.array(flat, pa.int64())),
                "target": pa.array(target, pa.int64()),
                "timestamp": pa.array(stamp, pa.int64()),
                **_extra_columns(frame, extras, offsets, max_history),
            }
        )
        _collect_asins(asins, target, frame.get("item_asin"), full_history, extras["item_asins"], warnings)
        if with_ids:
            titles = items["title"].to_numpy(dtype=object)
            mismatch = int((titles[target] != frame["item_title"].to_numpy(dtype=object)).sum())
            if mismatch:
                stats_drops[f"{name}_item_title_differs_from_items_tsv"] = mismatch
                log.warning("%s: %d rows whose item_title differs from the title of item_id", path, mismatch)
    with_users = all("user_id" in f for f in frames.values())
    users = pd.concat([f["user_id"] for f in frames.values()]) if with_users else None
    n_titles = items["title"].nunique()
    items_table = pa.table(
        {
            "item_id": pa.array(items["item_id"].to_numpy(np.int64)),
            "title": pa.array(items["title"].astype(str).tolist(), pa.string()),
            "source_id": pa.array([asins.get(i, str(i)) for i in items["item_id"].tolist()], pa.string()),
        }
    )
    stats = {
        "source": "import",
        "import_dir": str(folder),
        "users": int(users[users != ""].nunique()) if with_users else None,  # unknown if a file lacks user_id
        "items": n_items,
        "unique_titles": int(n_titles),
        "items_sharing_a_title": int(n_items - n_titles),
        "interactions": None,  # unknown: an imported split has no per-user sequences
        "samples": {name: table.num_rows for name, table in splits.items()},
        "dropped": stats_drops,
        "warnings": dict(warnings),  # import_checks: counted, not fatal
    }
    log.info("imported %s: %s samples, %d items", folder, stats["samples"], n_items)
    return items_table, splits, stats

"""What an imported D3/BIGRec split must satisfy, and what it may carry besides titles and ids.

Errors (the split cannot be used as given; each names the file and line):
- a file pandas cannot read (empty, not UTF-8, broken quoting), or one with no sample rows;
- an empty or whitespace-only title (it would become an item, and the top recommendation);
- a train row that copies a valid or test row, user included (test leakage: inflated metrics);
- optional list columns (item_asins, history_rating, history_timestamp) whose length is not the
  history's;
- an item id (item_id, history_item_id) that is no integer, or lies outside 0..N-1 of the catalogue
  (items.tsv, or the ids the files give): numpy would read -3 as the third item from the end.
Counted warnings (stats.json `warnings`, and the log): duplicate rows within a split, identical
(history, target) rows across splits without a user to tell them apart, history titles that disagree
with the titles of the history ids, ids given two different titles or ASINs.
"""

from __future__ import annotations

import ast
import json
import logging
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger("flowrec.data")

# Optional per-sample list columns an import carries into its D3 export (docs/formats.md).
LIST_EXTRAS = ("item_asins", "history_rating", "history_timestamp")


def read_csv_named(path: Path, **kwargs) -> pd.DataFrame:
    """pd.read_csv whose errors name the file (pandas' own messages do not)."""
    try:
        return pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError as err:
        raise ValueError(f"{path}: empty file (no header line)") from err
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 ({err.reason} at byte {err.start})") from err
    except pd.errors.ParserError as err:
        raise ValueError(f"{path}: not a readable CSV/TSV file ({err})") from err


def check_rows(frame: pd.DataFrame, path: Path) -> None:
    if frame.empty:
        raise ValueError(f"{path}: no samples (a header line only); every split needs at least one row")


def check_titles(titles: pd.Series, path: Path, column: str) -> None:
    """No empty or whitespace-only title (line numbers count the header as line 1)."""
    blank = titles.astype(str).str.strip() == ""
    if blank.any():
        line = int(blank.to_numpy().argmax()) + 2
        raise ValueError(
            f"{path}:{line}: {column} is empty or whitespace ({int(blank.sum())} such rows); "
            "an empty title would become an item"
        )


def check_history_titles(lists: list[list], path: Path) -> None:
    for row, titles in enumerate(lists):
        if any(not isinstance(t, str) or not t.strip() for t in titles):
            raise ValueError(f"{path}:{row + 2}: history_item_title holds an empty or non-text title")


def _parse(cell: str, path: Path, line: int, column: str) -> list:
    """A list cell: JSON (numbers, double-quoted text) or else a Python literal (single quotes)."""
    try:
        value = json.loads(cell)
    except ValueError:
        try:
            value = ast.literal_eval(cell)
        except (ValueError, SyntaxError) as err:
            raise ValueError(f"{path}:{line}: column {column}: {cell[:80]!r} is not a list literal") from err
    if not isinstance(value, list):
        raise ValueError(f"{path}:{line}: column {column}: expected a list, got {cell[:80]!r}")
    return value


_PLAIN_ASIN = re.compile(r"^'[A-Za-z0-9_-]*'$")


def _fast_lists(cells: pd.Series, column: str) -> list[list | None]:
    """Rows of `[1.0, 2.0]` / `['B00X', 'B00Y']` split with vectorised string operations (an import has
    tens of thousands of rows); None for a row that needs a real parse (quotes inside, other spacing)."""
    inner = cells.str.strip().str.removeprefix("[").str.removesuffix("]")
    rows = inner.str.split(", ").tolist()
    out: list[list | None] = []
    for cell, parts in zip(cells, rows, strict=True):
        if not cell.startswith("[") or not cell.endswith("]"):
            out.append(None)
        elif parts == [""]:
            out.append([])
        elif column == "item_asins":
            out.append([p[1:-1] for p in parts] if all(_PLAIN_ASIN.match(p) for p in parts) else None)
        else:
            try:
                out.append([int(p) if column == "history_timestamp" else float(p) for p in parts])
            except ValueError:
                out.append(None)
    return out


def list_extras(frame: pd.DataFrame, path: Path, lengths: np.ndarray) -> dict[str, list[list] | None]:
    """The optional list columns of one split, each row checked against its history length (full,
    before truncation); None where the file lacks the column or leaves every cell empty."""
    out: dict[str, list[list] | None] = {}
    for column in LIST_EXTRAS:
        if column not in frame or (frame[column] == "").all():
            out[column] = None
            continue
        values = _fast_lists(frame[column], column)
        for row, cell in enumerate(frame[column]):
            if values[row] is None:  # not the plain text Python writes: parse it properly
                values[row] = _parse(cell, path, row + 2, column) if cell != "" else []
            if len(values[row]) != lengths[row]:
                raise ValueError(
                    f"{path}:{row + 2}: column {column} has {len(values[row])} entries, the history {lengths[row]}"
                )
        out[column] = values
    return out


_INTEGER = r"[-+]?[0-9]+"


def integer_ids(cells: pd.Series, path: Path, column: str) -> np.ndarray:
    """int64 item ids of a column of text cells; a cell that is no integer (1.5, "a", empty) is an error
    naming its line (pd.to_numeric would read 1.5 and the cast keep 1)."""
    text = cells.astype(str).str.strip()
    whole = text.str.fullmatch(_INTEGER).to_numpy(bool)
    if not whole.all():
        row = int((~whole).argmax())
        raise ValueError(f"{path}:{row + 2}: {column} {cells.iloc[row]!r} is not an integer item id")
    return text.astype(np.int64).to_numpy()


def check_integer_lists(rows: list[list], path: Path, column: str) -> None:
    """Every entry of every parsed list cell is an int (JSON would give 1.5 or "a" as they are)."""
    for row, ids in enumerate(rows):
        for value in ids:
            if type(value) is not int:  # bool is an int subclass, and no item id either
                raise ValueError(f"{path}:{row + 2}: {column} holds {value!r}, not an integer item id")


def check_ids_in_range(
    ids: np.ndarray | list[list[int]], path: Path, column: str, n_items: int | None, catalogue: str
) -> None:
    """Every id in 0..n_items-1 (n_items None: only not negative, while the catalogue is being built
    from these ids); `ids` is one id per row (a target column) or one list per row (histories). The
    error names the file, line, column and value."""
    if isinstance(ids, np.ndarray):
        flat, row_of = ids.astype(np.int64), np.arange(len(ids))
    else:
        lengths = np.fromiter((len(r) for r in ids), np.int64, len(ids))
        flat = np.fromiter((i for r in ids for i in r), np.int64, int(lengths.sum()))
        row_of = np.repeat(np.arange(len(ids)), lengths)
    bad = (flat < 0) if n_items is None else (flat < 0) | (flat >= n_items)
    if not bad.any():
        return
    first = int(bad.argmax())
    expected = (
        "item ids count from 0"
        if n_items is None
        else f"expected 0..{n_items - 1}, the item ids of {catalogue}"
    )
    raise ValueError(
        f"{path}:{int(row_of[first]) + 2}: {column} {int(flat[first])} is out of range ({expected}; "
        f"{int(bad.sum())} such ids in this file)"
    )


def _row_keys(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    return frame[columns[0]].str.cat([frame[c] for c in columns[1:]], sep="\x1f")


def overlaps(frames: dict[str, pd.DataFrame], folder: Path, warnings: Counter) -> None:
    """Duplicates within a split (counted) and train rows copying valid/test rows (error with a user,
    counted without one: two users may share a history and a target)."""
    key_columns = ["history_item_title", "item_title"]
    keys = {}
    for name, frame in frames.items():
        with_user = "user_id" in frame and (frame["user_id"] != "").all()
        columns = [*key_columns, *(["user_id"] if with_user else [])]
        columns += [c for c in ("timestamp",) if c in frame and with_user]
        keys[name] = (_row_keys(frame, columns), with_user)
        repeated = int(keys[name][0].duplicated().sum())
        if repeated:
            warnings[f"{name}_duplicate_rows"] += repeated
            log.warning(
                "%s: %d rows repeat an earlier row of the same file", folder / f"{name}.csv", repeated
            )
    train_keys, train_user = keys["train"]
    for name in ("valid", "test"):
        held_out, with_user = keys[name]
        copied = held_out.isin(set(train_keys))
        if not copied.any():
            continue
        line = int(copied.to_numpy().argmax()) + 2
        if with_user and train_user:
            raise ValueError(
                f"{folder / f'{name}.csv'}:{line}: {int(copied.sum())} {name} rows (user, history, target, "
                f"timestamp) also appear in {folder / 'train.csv'}: the split leaks {name} samples into train"
            )
        warnings[f"{name}_rows_also_in_train"] += int(copied.sum())
        log.warning(
            "%s: %d rows (history, target) also in train.csv", folder / f"{name}.csv", int(copied.sum())
        )


def history_title_mismatches(
    frame: pd.DataFrame,
    history: list[list[int]],
    titles: np.ndarray,
    path: Path,
    warnings: Counter,
    name: str,
) -> None:
    """Count rows whose history_item_title disagrees with the titles of history_item_id (ids win)."""
    reprs = np.array([repr(t) for t in titles], dtype=object)
    lengths = np.fromiter((len(r) for r in history), np.int64, len(history))
    flat = np.fromiter((i for r in history for i in r), np.int64, int(lengths.sum()))
    lists = pa.ListArray.from_arrays(
        pa.array(np.r_[0, np.cumsum(lengths)]), pa.array(reprs[flat], pa.string())
    )
    written = pc.binary_join_element_wise("[", pc.binary_join(lists, ", "), "]", "")  # as Python writes it
    given = frame["history_item_title"].to_numpy(object)
    bad, first = 0, None
    for row in np.flatnonzero(
        np.asarray(written.to_pylist(), dtype=object) != given
    ):  # other spelling or wrong
        if _parse(given[row], path, row + 2, "history_item_title") != [titles[i] for i in history[row]]:
            bad += 1
            first = first or int(row) + 2
    if bad:
        warnings[f"{name}_history_titles_differ_from_ids"] += bad
        log.warning(
            "%s:%d: %d rows whose history_item_title differs from the titles of history_item_id",
            path,
            first,
            bad,
        )

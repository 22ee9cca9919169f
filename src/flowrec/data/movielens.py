"""MovieLens-100K as shipped inside the recbole package (the embedded, offline default dataset)."""

from __future__ import annotations

import importlib.util
import logging
from collections import Counter
from pathlib import Path

import pandas as pd

from flowrec.data.protocol import clean_title

log = logging.getLogger("flowrec.data")


def movielens_folder() -> Path:
    """recbole/dataset_example/ml-100k of the installed recbole (no import of recbole itself)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the recbole package is not installed: it ships ml-100k (dataset_example/ml-100k)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / "ml-100k"


def movielens_files(folder: Path | None = None) -> dict[str, str]:
    """{"inter": ml-100k.inter, "item": ml-100k.item} paths (the inputs of prepare_data)."""
    folder = folder or movielens_folder()
    return {"inter": str(folder / "ml-100k.inter"), "item": str(folder / "ml-100k.item")}


def _read_atomic(path: str | Path, columns: list[str]) -> pd.DataFrame:
    """A RecBole atomic file (header `name:type`) as strings, renamed to plain names."""
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3)
    frame.columns = [c.split(":")[0] for c in frame.columns]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; header has {list(frame.columns)}")
    return frame


def movielens_titles(item_path: str | Path, max_title_words: int, drops: Counter) -> pd.Series:
    """Clean title per item id (index: item id as string).

    Titles shared by several movies get " (release_year)" appended; movies that MovieLens lists twice
    (same title and year, e.g. "Chasing Amy" 1997) keep one title shared by two items, as Amazon's
    duplicate titles do (generation and metrics work on titles).
    """
    items = _read_atomic(item_path, ["item_id", "movie_title", "release_year"])
    # ours always: the published title rule is the Amazon script's (datasets.*.title_cleaning: source amazon)
    cleaned = [clean_title(t, max_title_words, "flowrec") for t in items["movie_title"]]
    for _, reason in cleaned:
        if reason:
            drops[f"item_{reason}"] += 1
    items = items.assign(title=[t for t, _ in cleaned]).dropna(subset=["title"])
    shared = items["title"].duplicated(keep=False) & (items["release_year"] != "")
    items.loc[shared, "title"] = items.loc[shared, "title"] + " (" + items.loc[shared, "release_year"] + ")"
    still = int(items["title"].duplicated().sum())
    log.info(
        "%s: %d titles disambiguated by year, %d items still share a title", item_path, shared.sum(), still
    )
    return pd.Series(items["title"].to_numpy(), index=items["item_id"].to_numpy(), name="title")


def load_movielens(
    inter_path: str | Path, item_path: str | Path, max_title_words: int, drops: Counter
) -> tuple[pd.DataFrame, pd.Series]:
    """(interactions, titles): every rating is an interaction (user, item, timestamp, rating)."""
    titles = movielens_titles(item_path, max_title_words, drops)
    inter = _read_atomic(inter_path, ["user_id", "item_id", "rating", "timestamp"])
    bad = pd.to_numeric(inter["timestamp"], errors="coerce").isna()
    if bad.any():
        line = int(bad.to_numpy().argmax()) + 2  # header is line 1
        raise ValueError(
            f"{inter_path}:{line}: timestamp {inter['timestamp'][bad].iloc[0]!r} is not a number"
        )
    no_title = ~inter["item_id"].isin(titles.index)
    drops["item_no_title"] += int(no_title.sum())
    inter = inter[~no_title]
    frame = pd.DataFrame(
        {
            "user": inter["user_id"].to_numpy(),
            "item": inter["item_id"].to_numpy(),
            "timestamp": pd.to_numeric(inter["timestamp"]).astype("int64").to_numpy(),
            "rating": pd.to_numeric(inter["rating"], errors="coerce").to_numpy(),
        }
    )
    log.info(
        "%s: %d interactions, %d users, %d items",
        inter_path,
        len(frame),
        frame["user"].nunique(),
        frame["item"].nunique(),
    )
    return frame, titles

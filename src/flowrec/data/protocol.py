"""The data protocol (docs/method.md section 2): window, title cleaning, k-core, item ids, samples, split.

Every source (MovieLens, Amazon, ...) reduces to one `Interactions` frame and a title per item; the
functions here turn that into the canonical items table and the three splits (docs/formats.md,
"Data stage"). Everything is vectorised over interactions (numpy / pandas), no per-user Python loop.
"""

from __future__ import annotations

import html
import logging
import math
import random
import re
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa

from flowrec.data.settings import DatasetSettings, month_start

log = logging.getLogger("flowrec.data")

SPLITS = ("train", "valid", "test")
# Markup such as the `<span class="a-size-medium ...` junk titles of the Amazon 2018 metadata:
# a "<" directly followed by a tag name (or "/" or "!"). "Love <3" or "a < b" are not markup.
_MARKUP = re.compile(r"<\s*[/!]?[A-Za-z][A-Za-z0-9-]*(?:[\s/>]|$)")
_STRIP = " \t\r\n\"'"
# Reasons counted in `drops` for rows that were kept (repaired), reported as stats.json `warnings`.
_KEPT_WITH_WARNING = ("_non_utf8_line",)


def window_bounds(settings: DatasetSettings, start_month: str | None = None) -> tuple[int | None, int | None]:
    """(low, high) unix seconds, both inclusive: low = start of window_start's month, high = start of
    window_end's month (the paper's "2015-10 to 2018-11, start of month to start of month, inclusive":
    a review stamped exactly 2018-11-01 00:00 UTC is kept, one on 2018-11-02 is not). None = no bound."""
    start = start_month if start_month is not None else settings.window_start
    low = month_start(start, "window_start") if start else None
    high = month_start(settings.window_end, "window_end") if settings.window_end else None
    return low, high


def clean_title(raw: object, max_words: int, cleaning: str) -> tuple[str | None, str | None]:
    """(clean title, None) or (None, reason) for one raw title (docs/method.md section 2).

    `cleaning` flowrec (ours): html.unescape, then strip surrounding spaces and quotes; drop a missing
    title, one of one character or less, more than `max_words` whitespace-separated words, or one
    containing HTML markup. `published`: the published preprocessing script's rule (`clean_title_published`).
    """
    if cleaning == "published":
        return clean_title_published(raw, max_words)
    if cleaning != "flowrec":
        raise ValueError(f"title_cleaning: {cleaning!r}, expected flowrec or published")
    if not isinstance(raw, str):
        return None, "title_missing"
    title = html.unescape(raw).strip(_STRIP)
    if not title:
        return None, "title_missing"
    if _MARKUP.search(title):
        return None, "title_html"
    if len(title) <= 1:
        return None, "title_too_short"
    if len(title.split()) > max_words:
        return None, "title_too_long"
    return title, None


def clean_title_published(raw: object, max_words: int) -> tuple[str | None, str | None]:
    """The published preprocessing's title rule (Mr-Peach0301/Flower, with_history/code/process.py).

    A raw title containing `<span id` is dropped (other markup, e.g. `<span class=`, is kept); only
    `&quot;` and `&amp;` are unescaped (`&#39;` and the rest stay as written); then spaces, and after
    them double quotes, are stripped from both ends (`'x'` keeps its single quotes, `" x "` becomes
    ` x `: the spaces inside the quotes stay). Kept if longer than one character
    and at most `max_words` words split on single spaces (two spaces in a row count an empty word).
    """
    if not isinstance(raw, str):
        return None, "title_missing"
    if "<span id" in raw:
        return None, "title_html"
    title = raw.replace("&quot;", '"').replace("&amp;", "&").strip(" ").strip('"')
    if not title:
        return None, "title_missing"
    if len(title) <= 1:
        return None, "title_too_short"
    if len(title.split(" ")) > max_words:
        return None, "title_too_long"
    return title, None


def repeat_counts(history: list[list[int]], target: list[int]) -> dict[str, int]:
    """How many samples have their target in their own history, and how many a history item twice.

    Both are 0 when repeated (user, item) pairs are dropped (datasets.*.repeats: drop); the published
    split keeps them (datasets.*.repeats: keep).
    """
    return {
        "target_in_history": sum(t in h for h, t in zip(history, target, strict=True)),
        "repeated_history_item": sum(len(set(h)) < len(h) for h in history),
    }


def filter_window(inter: pd.DataFrame, low: int | None, high: int | None, drops: Counter) -> pd.DataFrame:
    """Keep interactions with low <= timestamp <= high (see window_bounds)."""
    keep = np.ones(len(inter), dtype=bool)
    ts = inter["timestamp"].to_numpy()
    if low is not None:
        keep &= ts >= low
    if high is not None:
        keep &= ts <= high
    drops["outside_window"] += int((~keep).sum())
    return inter[keep]


def dedupe_user_item(inter: pd.DataFrame, drops: Counter) -> pd.DataFrame:
    """Keep only the earliest interaction of each (user, item) pair (ties: source order).

    Amazon lists some reviews twice (and a user may review an item again); a repeated item in a
    history adds no information and would make the target leak into the history.
    """
    ordered = inter.sort_values(["timestamp", "order"], kind="stable")
    dup = ordered.duplicated(["user", "item"], keep="first").to_numpy()
    drops["duplicate_user_item"] += int(dup.sum())
    return ordered[~dup].sort_values("order", kind="stable")


def k_core(inter: pd.DataFrame, k: int, drops: Counter) -> pd.DataFrame:
    """Iteratively drop users and items with fewer than k interactions until nothing changes."""
    users = inter["user"].cat.codes.to_numpy()
    items = inter["item"].cat.codes.to_numpy()
    keep = np.ones(len(inter), dtype=bool)
    rounds = 0
    while True:
        rounds += 1
        user_count = np.bincount(users[keep], minlength=len(inter["user"].cat.categories))
        item_count = np.bincount(items[keep], minlength=len(inter["item"].cat.categories))
        new_keep = keep & (user_count[users] >= k) & (item_count[items] >= k)
        if (new_keep == keep).all():
            break
        keep = new_keep
    drops["k_core"] += int((~keep).sum())
    log.info(
        "k-core %d: stable after %d rounds, %d of %d interactions kept", k, rounds, keep.sum(), len(keep)
    )
    return inter[keep]


def assign_item_ids(source_ids: np.ndarray, seed: int) -> np.ndarray:
    """Source ids in item-id order: the ids sorted as strings, then permuted with default_rng(seed).

    Returns `ordered` with item_id j <-> ordered[j] (the reference shuffles with seed 42 likewise).
    """
    ordered = np.sort(np.asarray(source_ids, dtype=object).astype(str))
    return ordered[np.random.default_rng(seed).permutation(len(ordered))]


def assign_item_ids_published(first_seen: list[str], seed: int) -> np.ndarray:
    """Item-id order of the published script (datasets.*.ordering: published): the items in order of
    their first kept review in the file, shuffled in place by Python's `random` seeded with `seed`.

    Python's Mersenne Twister shuffle is the same on every platform and version since 3.2, so the
    published ids can be rebuilt from the raw files; numpy's generator (ours) gives other ids.
    """
    ordered = list(first_seen)
    random.Random(seed).shuffle(ordered)
    return np.asarray(ordered, dtype=object)


def split_sizes(n: int, shares: list[float], ordering: str) -> tuple[int, int, int]:
    """(train, valid, test) sizes of `n` samples sorted by time (S = sum of shares).

    flowrec: train = floor(s0 / S * n), valid = floor(s1 / S * n), test = the rest. published (the
    script's cumulative cut points): train = floor(s0 / S * n), valid = floor((s0 + s1) / S * n) - train.
    E.g. 61564 samples with [0.8, 0.1, 0.1] -> 49251 / 6156 / 6157 both ways (the published CDs split);
    61417 (Games) -> 49133 / 6141 / 6143 (flowrec) and 49133 / 6142 / 6142 (published).
    """
    total = sum(shares)
    n_train = math.floor(shares[0] / total * n + 1e-9)
    if ordering == "published":
        n_valid = math.floor((shares[0] + shares[1]) / total * n + 1e-9) - n_train
    else:
        n_valid = math.floor(shares[1] / total * n + 1e-9)
    return n_train, n_valid, n - n_train - n_valid


def user_ranks(inter: pd.DataFrame, ordering: str) -> np.ndarray:
    """Rank of each user code among the users, which breaks ties between samples of equal target time.

    flowrec: by user name. published: by the user's first interaction in source order (the published
    script lists users in the order it first meets them, and its sort by target time is stable).
    """
    if ordering == "published":
        key = np.full(len(inter["user"].cat.categories), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(key, inter["user"].cat.codes.to_numpy(), inter["order"].to_numpy(np.int64))
    else:
        key = np.asarray(inter["user"].cat.categories, dtype=object).astype(str)
    return np.argsort(np.argsort(key, kind="stable"), kind="stable")


def build_samples(
    inter: pd.DataFrame, item_code_to_id: np.ndarray, max_history: int, user_rank: np.ndarray
) -> pa.Table:
    """One sample per interaction after a user's first, ordered by (target time, user rank, position).

    `inter`: columns user/item (categorical), timestamp, rating, order. Per user the interactions are
    sorted by (timestamp, source order); the history of position i is positions max(0, i-H)..i-1.
    `user_rank`: user code -> rank (`user_ranks`). Columns: user, history, target,
    timestamp (the contract) and history_timestamp, history_rating, rating (kept for the D3 CSV only).
    """
    user_names = np.asarray(inter["user"].cat.categories, dtype=object).astype(str)
    df = pd.DataFrame(
        {
            "rank": user_rank[inter["user"].cat.codes.to_numpy()],
            "ts": inter["timestamp"].to_numpy(np.int64),
            "order": inter["order"].to_numpy(),
            "item": item_code_to_id[inter["item"].cat.codes.to_numpy()],
            "rating": inter["rating"].to_numpy(np.float64),
            "user": inter["user"].cat.codes.to_numpy(),
        }
    ).sort_values(["rank", "ts", "order"], kind="stable")
    rank = df["rank"].to_numpy()
    ts, items, ratings = df["ts"].to_numpy(), df["item"].to_numpy(np.int64), df["rating"].to_numpy()
    n = len(df)
    first = np.r_[True, rank[1:] != rank[:-1]] if n else np.zeros(0, dtype=bool)
    start_of_user = np.maximum.accumulate(np.where(first, np.arange(n), 0)) if n else np.zeros(0, np.int64)
    position = np.arange(n) - start_of_user
    rows = np.flatnonzero(position >= 1)
    lengths = np.minimum(position[rows], max_history)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    # Index of every history element: for sample s, rows[s]-lengths[s] .. rows[s]-1.
    gather = np.repeat(rows - lengths - offsets[:-1], lengths) + np.arange(offsets[-1])
    order = np.lexsort((position[rows], rank[rows], ts[rows]))

    def as_list(values: np.ndarray, typ: pa.DataType) -> pa.Array:
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int64()), pa.array(values, typ)).take(order)

    user_codes = df["user"].to_numpy()[rows][order]
    return pa.table(
        {
            "user": pa.array(user_names[user_codes], pa.string()),
            "history": as_list(items[gather], pa.int64()),
            "target": pa.array(items[rows][order], pa.int64()),
            "timestamp": pa.array(ts[rows][order], pa.int64()),
            "history_timestamp": as_list(ts[gather], pa.int64()),
            "history_rating": as_list(ratings[gather], pa.float64()),
            "rating": pa.array(ratings[rows][order], pa.float64()),
        }
    )


def _window_and_core(inter: pd.DataFrame, settings: DatasetSettings, start: str | None, drops: Counter):
    low, high = window_bounds(settings, start)
    kept = filter_window(inter, low, high, drops)
    if kept.empty:
        raise ValueError(
            f"no interactions inside the window window_start={start!r}, window_end={settings.window_end!r} "
            f"(data spans {_month(inter['timestamp'].min())} to {_month(inter['timestamp'].max())})"
        )
    if settings.repeats == "drop":
        kept = dedupe_user_item(kept, drops)
    kept = k_core(kept, settings.k_core, drops)
    return kept


def _as_category(column: pd.Series) -> pd.Series:
    """A categorical of strings (sources that already built categories keep them: no copy of 4 M strings)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.rename_categories(column.cat.categories.astype(str))
    return column.astype(str).astype("category")


def _month(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), tz=UTC).strftime("%Y-%m") if pd.notna(ts) else "nothing"


def build_dataset(
    inter: pd.DataFrame, titles: pd.Series, settings: DatasetSettings, drops: Counter
) -> tuple[pa.Table, dict[str, pa.Table], dict]:
    """Window, dedupe (repeats: drop), k-core, item ids, samples, split: (items, {split: samples}, stats).

    `inter`: columns user (str), item (source id, str), timestamp (unix s), rating, in source order;
    only items with a clean title (the index of `titles`) may appear. `drops` already holds the
    source's own dropped rows by reason and gets the protocol's.
    """
    inter = inter.reset_index(drop=True)
    inter = pd.DataFrame(
        {
            "user": _as_category(inter["user"]),
            "item": _as_category(inter["item"]),
            "timestamp": inter["timestamp"].to_numpy(np.int64),
            "rating": inter["rating"].to_numpy(np.float64) if "rating" in inter else np.nan,
            "order": np.arange(len(inter)),
        }
    )
    if inter.empty:
        raise ValueError("no interactions left before the window (every row dropped by the source filters)")
    start = settings.window_start
    attempt = Counter()
    kept = _window_and_core(inter, settings, start, attempt)
    floor_month = _month(inter["timestamp"].min())
    while (
        settings.widen_window_min_items is not None
        and kept["item"].nunique() < settings.widen_window_min_items
        and start is not None
        and start > floor_month
    ):
        # Reference-code behaviour (off by default): move the start one year back and start over.
        start = f"{int(start[:4]) - 1:04d}{start[4:]}"
        log.info(
            "%d items < widen_window_min_items: widening the window to %s", kept["item"].nunique(), start
        )
        attempt = Counter()
        kept = _window_and_core(inter, settings, start, attempt)
    drops.update(attempt)
    if kept.empty:
        raise ValueError(
            f"no interactions left after the {settings.k_core}-core inside window_start={start!r}, "
            f"window_end={settings.window_end!r}: lower k_core or widen the window"
        )
    kept = kept.assign(
        user=kept["user"].cat.remove_unused_categories(), item=kept["item"].cat.remove_unused_categories()
    )
    source_ids = np.asarray(kept["item"].cat.categories, dtype=object).astype(str)
    if settings.ordering == "published":
        first_seen = kept.sort_values("order", kind="stable")["item"].drop_duplicates()
        ordered = assign_item_ids_published(first_seen.astype(str).tolist(), settings.seed)
    else:
        ordered = assign_item_ids(source_ids, settings.seed)
    id_of_source = pd.Series(np.arange(len(ordered), dtype=np.int64), index=ordered)
    code_to_id = id_of_source.loc[source_ids].to_numpy()
    missing = ~pd.Index(ordered).isin(titles.index)
    if missing.any():
        raise ValueError(f"items without a title reached the protocol: {list(ordered[missing][:5])}")
    items = pa.table(
        {
            "item_id": pa.array(np.arange(len(ordered)), pa.int64()),
            "title": pa.array(titles.loc[ordered].to_numpy(dtype=object).astype(str), pa.string()),
            "source_id": pa.array(ordered, pa.string()),
        }
    )
    samples = build_samples(kept, code_to_id, settings.max_history, user_ranks(kept, settings.ordering))
    if samples.num_rows < 3:
        raise ValueError(
            f"only {samples.num_rows} samples after filtering (k_core={settings.k_core}, "
            f"window_start={start!r}, window_end={settings.window_end!r}); need at least 3 to split"
        )
    sizes = split_sizes(samples.num_rows, settings.split, settings.ordering)
    bounds = np.r_[0, np.cumsum(sizes)]
    splits = {name: samples.slice(bounds[i], sizes[i]) for i, name in enumerate(SPLITS)}
    n_titles = len(set(items.column("title").to_pylist()))
    stats = {
        "source": settings.source,
        "users": int(kept["user"].nunique()),
        "items": items.num_rows,
        "unique_titles": n_titles,
        "items_sharing_a_title": items.num_rows - n_titles,
        "interactions": len(kept),
        "samples": {name: table.num_rows for name, table in splits.items()},
        "window": {"start": start, "end": settings.window_end},
        "k_core": settings.k_core,
        "dropped": {k: v for k, v in sorted(drops.items()) if not k.endswith(_KEPT_WITH_WARNING)},
        # rows kept but repaired (e.g. flowrec.data.amazon: bytes that are not UTF-8 replaced), by reason
        "warnings": {k: v for k, v in sorted(drops.items()) if k.endswith(_KEPT_WITH_WARNING)},
    }
    if settings.repeats == "keep":  # only then: the default's stats.json stays as it was
        stats["repeats"] = {
            name: repeat_counts(table.column("history").to_pylist(), table.column("target").to_pylist())
            for name, table in splits.items()
        }
    return items, splits, stats

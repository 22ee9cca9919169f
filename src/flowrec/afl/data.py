"""AFL's inputs from the pipeline's files (docs/method.md section 9): settings, the candidates file, and
the users as loop cases (history titles, candidate titles, the recommendation model's suggestion, the
reward model's scores).

Reward model = SASRec's p_ui (sasrec/p_ui_{split}.npy). The score shown to the user agent is the share
of all items that SASRec ranks below the item for this user (a percentile, comparable across users).
Hits are on titles, as everywhere in flowrec: items sharing a title are one candidate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from flowrec.afl.loop import Case
from flowrec.io import read_items
from flowrec.sasrec import SplitArrays, read_split


@dataclass(frozen=True)
class AflSettings:
    """The `afl` block's run keys (defaults and help: config/schema.yaml); each rule passes only the
    keys it uses, the rest take their defaults unread."""

    users: int | None
    n_candidates: int
    max_rounds: int
    ratios: list[int]
    valid_users: int | None
    seed: int


def domain_of(source: str) -> str:
    """Prompt wording per dataset source: MovieLens is movies, Amazon and imports are products."""
    return "movie" if source == "movielens" else "product"


def read_titles(items_path: str | Path) -> np.ndarray:
    return read_items(items_path, columns=["item_id", "title"])["title"].to_numpy(dtype=object)


def write_candidates(path: str | Path, rows: np.ndarray, candidates: np.ndarray, judged: np.ndarray) -> None:
    from flowrec.io import write_parquet

    table = pa.table(
        {
            "sample": pa.array(rows.astype(np.int64)),
            "candidates": pa.array(candidates.tolist(), type=pa.list_(pa.int64())),
            "judged": pa.array(judged.tolist(), type=pa.list_(pa.int64())),
        }
    )
    write_parquet(table, path)


def read_candidates(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sample rows, candidate item ids (U, n), judged item ids (U, 1 + max ratio))."""
    table = pq.read_table(path)
    for column in ("sample", "candidates", "judged"):
        if column not in table.column_names:
            raise ValueError(f"{path}: missing column {column!r} (docs/formats.md, afl)")
    rows = table.column("sample").to_numpy()
    return (
        rows,
        np.array(table.column("candidates").to_pylist()),
        np.array(table.column("judged").to_pylist()),
    )


def percentile_rewards(p_ui: np.ndarray, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """(U, k) share of all items scored strictly below each of `items` (U, k) in p_ui rows `rows`."""
    scores = np.asarray(p_ui[rows], dtype=np.float32)  # (U, n_items)
    picked = np.take_along_axis(scores, items, axis=1)  # (U, k)
    sorted_scores = np.sort(scores, axis=1)
    below = np.stack([np.searchsorted(s, v, side="left") for s, v in zip(sorted_scores, picked, strict=True)])
    return below / scores.shape[1]


def load_p_ui(path: str | Path, n_rows: int, n_items: int) -> np.ndarray:
    p_ui = np.load(path, mmap_mode="r")
    if p_ui.shape != (n_rows, n_items):
        raise ValueError(f"{path}: shape {p_ui.shape}, expected ({n_rows}, {n_items}) (split rows x items)")
    return p_ui


def build_cases(
    split: SplitArrays,
    rows: np.ndarray,
    items: np.ndarray,
    titles: np.ndarray,
    suggest_p_ui: np.ndarray | None,
    reward_p_ui: np.ndarray | None,
) -> list[Case]:
    """One case per row: `items` (U, k) are the candidates (or the single judged item, k = 1);
    the suggestion is the candidate the recommendation model scores highest."""
    suggestion = None
    if suggest_p_ui is not None:
        scores = np.take_along_axis(np.asarray(suggest_p_ui[rows], dtype=np.float32), items, axis=1)
        suggestion = items[np.arange(len(rows)), scores.argmax(1)]
    rewards = percentile_rewards(reward_p_ui, rows, items) if reward_p_ui is not None else None
    cases = []
    for u, row in enumerate(rows):
        history = tuple(titles[split.history[row, : split.length[row]]])
        candidates = tuple(dict.fromkeys(titles[items[u]]))  # one entry per title, list order kept
        reward = None
        if rewards is not None:
            reward = {}
            for title, score in zip(titles[items[u]], rewards[u], strict=True):
                reward.setdefault(title, float(score))
        suggested = None if suggestion is None else str(titles[suggestion[u]])
        cases.append(Case(history=history, candidates=candidates, suggestion=suggested, rewards=reward))
    return cases


def read_split_and_titles(split_path: str | Path, items_path: str | Path) -> tuple[SplitArrays, np.ndarray]:
    titles = read_titles(items_path)
    return read_split(split_path, len(titles)), titles

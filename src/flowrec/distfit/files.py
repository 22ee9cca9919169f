"""The files of a distfit run (docs/formats.md), read and written without torch.

target.json is {title: count} in target order; samples/{method}.parquet and tuning_set.parquet hold
sampled titles; probs/{method}.parquet the exact log-probability of every target title. Torch-free,
so that the figure stage runs in envs/report.yaml.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from flowrec.io import write_parquet


def sort_target(counts: Mapping[str, float]) -> dict[str, float]:
    """{title: count} by count (descending), ties by title: the order of the table and the figure."""
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def read_target(path: str | Path) -> dict[str, float]:
    """target.json as written by the distfit_target stage (already checked), in its order."""
    return {str(t): float(c) for t, c in json.loads(Path(path).read_text(encoding="utf-8")).items()}


def write_samples(titles: Sequence[str], path: str | Path) -> None:
    """samples/{method}.parquet and tuning_set.parquet: `sample` int64, `title` string (docs/formats.md)."""
    table = pa.table(
        {"sample": pa.array(np.arange(len(titles)), pa.int64()), "title": pa.array(list(titles), pa.string())}
    )
    write_parquet(table, path)


def read_samples(path: str | Path) -> list[str]:
    return pd.read_parquet(path, columns=["title"])["title"].tolist()


def write_title_probs(titles: Sequence[str], log_probs: np.ndarray, path: str | Path) -> None:
    """probs/{method}.parquet: `title` string, `log_prob` float64: log P(title) under the model's
    trie-constrained policy at temperature 1 (flowrec.sampling.title_log_probs), every target title
    (`titles`: the trie's titles, in the order of `log_probs`)."""
    write_parquet(
        pa.table({"title": pa.array(titles, pa.string()), "log_prob": pa.array(log_probs, pa.float64())}),
        path,
    )


def read_title_probs(path: str | Path) -> dict[str, float]:
    """probs/{method}.parquet as {title: P(title)}."""
    frame = pd.read_parquet(path)
    return dict(zip(frame["title"], np.exp(frame["log_prob"].to_numpy()), strict=True))

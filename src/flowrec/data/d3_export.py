"""Export of our splits as the D3/BIGRec interop CSV (docs/method.md section 2; docs/formats.md).

Columns: user_id, item_asins, item_asin, history_item_id, item_id, history_item_title, item_title,
history_rating, rating, history_timestamp, timestamp; list cells are Python literals
(`['a', "b's"]`), as the published BIGRec/D3/Flower code writes them with pandas. The import of such
a split is flowrec.data.interop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from flowrec.io import atomic_path

D3_COLUMNS = [
    "user_id",
    "item_asins",
    "item_asin",
    "history_item_id",
    "item_id",
    "history_item_title",
    "item_title",
    "history_rating",
    "rating",
    "history_timestamp",
    "timestamp",
]


def _literal_rows(element_reprs: np.ndarray, offsets: np.ndarray) -> pa.Array:
    """Python-literal text of each row's list, from the repr of every flattened element (vectorised).

    Equals `repr(row_list)` per row: Python joins element reprs with ", " inside brackets.
    """
    lists = pa.ListArray.from_arrays(pa.array(offsets, pa.int64()), pa.array(element_reprs, pa.string()))
    return pc.binary_join_element_wise("[", pc.binary_join(lists, ", "), "]", "")


def _reprs(values: np.ndarray) -> np.ndarray:
    """repr() of each value, computed once per distinct value (titles, ids and ratings repeat a lot)."""
    unique, inverse = np.unique(values, return_inverse=True)
    return np.array([repr(v.item() if isinstance(v, np.generic) else v) for v in unique], dtype=object)[
        inverse
    ]


def d3_frame(samples: pa.Table, items: pa.Table) -> pd.DataFrame:
    """One split in D3 CSV columns; rating/timestamp columns empty where unknown (e.g. imported)."""
    titles = np.asarray(items.column("title").to_pylist(), dtype=object)
    sources = np.asarray(items.column("source_id").to_pylist(), dtype=object)
    title_reprs = np.array([repr(t) for t in titles], dtype=object)
    source_reprs = np.array([repr(t) for t in sources], dtype=object)
    history = samples.column("history").combine_chunks()
    flat = history.values.to_numpy()
    offsets = history.offsets.to_numpy() - history.offsets[0].as_py()
    target = samples.column("target").to_numpy()

    def optional_list(name: str) -> pa.Array | list:
        if name not in samples.column_names or samples.column(name).null_count == samples.num_rows:
            return [None] * samples.num_rows
        column = samples.column(name).combine_chunks()
        values = column.values.to_numpy(zero_copy_only=False)
        return _literal_rows(_reprs(values), column.offsets.to_numpy() - column.offsets[0].as_py())

    def optional(name: str) -> list:
        return samples.column(name).to_pylist() if name in samples.column_names else [None] * samples.num_rows

    return pd.DataFrame(
        {
            "user_id": samples.column("user").to_pylist(),
            "item_asins": _literal_rows(source_reprs[flat], offsets),
            "item_asin": sources[target],
            "history_item_id": _literal_rows(flat.astype(str).astype(object), offsets),
            "item_id": target,
            "history_item_title": _literal_rows(title_reprs[flat], offsets),
            "item_title": titles[target],
            "history_rating": optional_list("history_rating"),
            "rating": optional("rating"),
            "history_timestamp": optional_list("history_timestamp"),
            "timestamp": pd.array(optional("timestamp"), dtype="Int64"),
        },
        columns=D3_COLUMNS,
    )


def write_d3_csv(samples: pa.Table, items: pa.Table, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        d3_frame(samples, items).to_csv(tmp, index=False)

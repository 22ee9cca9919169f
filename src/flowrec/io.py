"""Atomic writes: a crash never leaves a half-written file under its final name."""

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

# Below this many free bytes a failed write is reported as a full disk: some writers (torch.save's
# zip writer) turn ENOSPC into a bare "iostream error" that names neither the cause nor the file.
_FULL_DISK_BYTES = 1 << 20


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it to `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        tmp_path.chmod(0o644)  # mkstemp creates 0600; outputs are read by other users and jobs
        os.replace(tmp_path, path)
    except Exception as err:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            raise
        free = shutil.disk_usage(path.parent).free
        if free < _FULL_DISK_BYTES:
            raise OSError(
                errno.ENOSPC, f"No space left on device while writing {path} ({free} bytes free; {err})"
            ) from err
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_parquet(table: pa.Table, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_json(obj: object, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_text(text: str, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_parquet(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """A parquet file as a DataFrame (as pd.read_parquet), read on the calling thread only.

    pd.read_parquet hands Arrow a Python file object and reads through the dataset API, which starts
    Arrow's I/O and CPU thread pools (three threads for one small file here). Such threads still alive
    when the interpreter exits have aborted a finished stage with "terminate called without an active
    exception" (apache/arrow#34314; the file-object case apache/arrow#50482, avoided there by
    use_threads=False). ParquetFile on the path with use_threads=False starts no thread at all; the
    files of a stage are small, so nothing is lost."""
    with pq.ParquetFile(str(path)) as parquet:
        table = parquet.read(columns=columns, use_threads=False, use_pandas_metadata=True)
    return table.to_pandas(use_threads=False)


def read_items(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """items.parquet (docs/formats.md) sorted by item_id, checked to number the items 0..N-1."""
    items = read_parquet(path, columns=columns).sort_values("item_id", kind="stable")
    if not np.array_equal(items["item_id"].to_numpy(), np.arange(len(items))):
        raise ValueError(f"{path}: item_id must be exactly 0..{len(items) - 1} (docs/formats.md)")
    return items.reset_index(drop=True)

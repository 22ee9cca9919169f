"""flowrec.io.read_parquet: pd.read_parquet's frame, without starting Arrow's thread pools (threads
alive at exit aborted a finished evaluate_method with "terminate called without an active exception")."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa

from flowrec.io import read_parquet, write_parquet

SRC = Path(__file__).resolve().parents[2] / "src"


def _table(path: Path) -> None:
    frame = pd.DataFrame({"sample": [3, 1, 2], "titles": [["a", "b"], ["c"], []], "score": [0.5, 1.0, 2.0]})
    write_parquet(pa.Table.from_pandas(frame), path)


def test_same_frame_as_pandas(tmp_path):
    path = tmp_path / "p.parquet"
    _table(path)
    pd.testing.assert_frame_equal(read_parquet(path), pd.read_parquet(path))
    pd.testing.assert_frame_equal(read_parquet(path, ["score"]), pd.read_parquet(path, columns=["score"]))


def test_no_thread_is_started(tmp_path):
    path = tmp_path / "p.parquet"
    _table(path)
    # A fresh interpreter: this one may have started Arrow's pools already.
    code = (
        "import os, sys; import pandas as pd; from flowrec.io import read_parquet\n"
        "n = lambda: len(os.listdir('/proc/self/task'))\n"
        f"before = n(); read_parquet({str(path)!r}); mine = n()\n"
        f"pd.read_parquet({str(path)!r}); print(before, mine, n())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONPATH": str(SRC)}
    ).stdout.split()
    before, mine, pandas_read = map(int, out)
    assert mine == before, f"read_parquet started {mine - before} threads"
    assert pandas_read > before, "pd.read_parquet starts none here: the test shows nothing"

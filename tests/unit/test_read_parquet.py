"""flowrec.io.read_parquet: pd.read_parquet's frame, without starting Arrow's thread pools (threads
alive at exit aborted a finished evaluate_method with "terminate called without an active exception");
and flowrec.arrow_exit, which keeps a user's pd.read_parquet script from the same abort."""

import site
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from flowrec.arrow_exit import PTH_FILE, PTH_LINE, install
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


def _results_file(path: Path) -> None:
    """A file shaped like results/{dataset}/data/test.parquet (2000 samples with histories): the shape
    with which the abort was measured (4 of 50 plain pd.read_parquet scripts, pyarrow 23.0.1)."""
    rng = np.random.default_rng(0)
    n = 2000
    frame = pd.DataFrame(
        {
            "user": [f"u{i}" for i in range(n)],
            "history": [rng.integers(0, 1600, rng.integers(1, 20)).tolist() for _ in range(n)],
            "target": rng.integers(0, 1600, n),
            "timestamp": np.arange(n),
        }
    )
    write_parquet(pa.Table.from_pandas(frame, preserve_index=False), path)


# What a user's script does (pandas opens the file and hands pyarrow the Python file object), and the
# same through pyarrow directly, which aborted far more often (26 of 50 runs without the .pth line).
PANDAS_READ = "import pandas as pd\nt = pd.read_parquet({path!r})\nprint(len(t))\n"
FILE_OBJECT_READ = (
    "import pyarrow.parquet as pq\nwith open({path!r}, 'rb') as f:\n    t = pq.read_table(f)\nprint(len(t))\n"
)


def read_exit_codes(read: str, path: Path, site_dir: Path, runs: int) -> list[int]:
    """Exit codes of `runs` fresh interpreters that run `read` on `path` (it prints the row count).

    -S: no site-packages .pth of this environment runs (it may hold PTH_FILE already); the packages come
    through PYTHONPATH, which runs no .pth; site.addsitedir(site_dir) then runs the .pth files of
    `site_dir` exactly as interpreter start-up runs those of site-packages. A run that exits 0 without
    printing the row count reads as -1."""
    packages = str(Path(pd.__file__).resolve().parents[1])
    code = f"import site; site.addsitedir({str(site_dir)!r})\n" + read.format(path=str(path))

    def one(_: int) -> int:
        env = {"PYTHONPATH": f"{SRC}:{packages}"}
        proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env)
        return proc.returncode if proc.returncode or proc.stdout.strip() == "2000" else -1

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, range(runs)))


@pytest.mark.parametrize("read", [PANDAS_READ, FILE_OBJECT_READ], ids=["pandas", "file_object"])
def test_fifty_reads_of_a_results_file_exit_cleanly_with_the_pth_line(tmp_path, read):
    path = tmp_path / "test.parquet"
    _results_file(path)
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    assert install(site_dir) == site_dir / PTH_FILE
    codes = read_exit_codes(read, path, site_dir, runs=50)
    assert codes == [0] * 50, (
        f"{sum(c != 0 for c in codes)} of 50 runs failed, exit codes {sorted(set(codes))}"
    )


def test_this_environment_has_the_pth_line():
    """The venv the tests run in was built by the Makefile, which installs the line."""
    installed = [Path(d) / PTH_FILE for d in site.getsitepackages() if (Path(d) / PTH_FILE).exists()]
    assert installed, f"no {PTH_FILE} in site-packages: run `python -m flowrec.arrow_exit install`"
    assert installed[0].read_text() == PTH_LINE

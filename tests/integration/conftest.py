"""The tiny workflow, run once per test session in a copy of the repository."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def copy_repo(dest: Path) -> Path:
    """Copy the repository's tracked and untracked-but-not-ignored files (no results, no venv) to dest."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = REPO / name.decode()
        if src.is_file():
            target = dest / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    return dest


def run_snakemake(
    workdir: Path, *args: str, check: bool = True, timeout: int = 1200
) -> subprocess.CompletedProcess:
    """Run snakemake on the tiny config in `workdir`; on failure show its output."""
    # --configfile takes several values: it comes before --cores so that a target in args stays a target.
    # 4 cores on this 2-core machine: tiny jobs are mostly single-threaded start-up (imports), so two
    # two-thread jobs at a time take the tiny workflow from ~260 s to ~165 s; a rule's thread count (and so
    # every result) is the same as with --cores 2.
    cmd = [SNAKEMAKE, "--configfile", "config/tiny.yaml", "--cores", "4", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
        )
    return proc


@pytest.fixture(scope="session")
def tiny_workflow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository copy on which the whole tiny workflow has run to completion."""
    workdir = copy_repo(tmp_path_factory.mktemp("tiny"))
    run_snakemake(workdir)
    return workdir

"""Faults: a run killed mid-job, a full disk, an unwritable or impossible results directory.

- Killed: Snakemake and its job are SIGKILLed while Flower's tuning runs (a crash or a lost node: no
  clean-up code runs). No file under a final output name may look complete when it is not: every such
  file is either readable in full or one Snakemake holds as incomplete, and `--rerun-incomplete` redoes
  the job and what follows, ending up to date.
- Full disk: as root, a 256 KiB tmpfs is mounted over Flower's tuning folder (a real ENOSPC from the
  kernel; no root, no mount: skipped). The run fails, naming "No space left on device", and leaves no
  output of the failed job.
- Unwritable: as root a read-only tmpfs (EROFS), otherwise chmod 0555 (root ignores modes, so as root
  the mount is the honest way); and `results` being a regular file (ENOTDIR). The run fails naming the
  cause.
"""

import json
import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.integration.conftest import SNAKEMAKE, copy_repo, run_snakemake

pytestmark = pytest.mark.slow


@pytest.fixture()
def finished(tiny_workflow, tmp_path) -> Path:
    """A private copy of the finished tiny workflow (mtimes kept)."""
    workdir = tmp_path / "tiny"
    shutil.copytree(tiny_workflow, workdir, symlinks=True)
    return workdir


def is_readable(path: Path) -> bool:
    """Whether a file parses in full by its type (a truncated file does not)."""
    try:
        if path.suffix == ".parquet":
            pq.read_table(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".csv":
            pd.read_csv(path)
        elif path.suffix in (".npz", ".npy"):
            data = np.load(path, allow_pickle=False)
            if isinstance(data, np.lib.npyio.NpzFile):
                [data[key] for key in data.files]
        elif path.suffix == ".png":
            return path.read_bytes().endswith(b"IEND\xaeB`\x82")
        elif path.suffix in (".safetensors", ".pth", ".pt", ".bin"):
            import torch  # only here: a slow import

            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                load_file(path)
            else:
                torch.load(path, map_location="cpu", weights_only=False)
        return path.stat().st_size > 0 or path.suffix in (".log", ".txt")
    except Exception:
        return False


def incomplete_files(workdir: Path) -> tuple[set[str], str]:
    """The outputs Snakemake holds as incomplete (from `snakemake -n`'s refusal), and its output."""
    proc = run_snakemake(workdir, "-n", check=False)
    text = proc.stdout + proc.stderr
    listed = set()
    if "Incomplete files:" in text:
        block = text[text.index("Incomplete files:") :].splitlines()[1:]
        for line in block:
            if not line.strip() or " " in line.strip():
                break
            listed.add(line.strip().rstrip("/"))
    return listed, text


def test_kill_mid_training_then_rerun_incomplete_resumes(finished):
    """A run killed between Flower's two epochs resumes from the epoch-1 checkpoint on rerun and
    ends with the metrics of the uninterrupted run (the session's tiny workflow)."""
    flower_metrics = finished / "results/ml100k/metrics/flower.json"
    uninterrupted = json.loads(flower_metrics.read_text())
    # A fresh run's state for Flower: its tuned model and everything made from it do not exist yet.
    shutil.rmtree(finished / "results/ml100k/tune/flower")
    (finished / "results/ml100k/predictions/flower.parquet").unlink()
    flower_metrics.unlink()
    last = finished / "results/ml100k/tune/flower/checkpoints/last.pt"

    # Ask for Flower's metrics by name: deleted intermediates alone do not make Snakemake rerun the
    # jobs before finished outputs (the tables here), as with temp() files.
    target = "results/ml100k/metrics/flower.json"
    cmd = [SNAKEMAKE, "--configfile", "config/tiny.yaml", "--cores", "2", target]
    proc = subprocess.Popen(
        cmd, cwd=finished, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 900
    try:
        while not last.is_file():  # written atomically after epoch 1 of 2
            assert proc.poll() is None, "snakemake ended before Flower's first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 15 minutes"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # Snakemake, its job and the job's children at once
        proc.wait()
    assert not (finished / "results/ml100k/tune/flower/model").exists(), "killed too late: Flower finished"

    # A killed Snakemake leaves its lock behind; the next run refuses (naming the incomplete files)
    # and --unlock removes the lock.
    locks = finished / ".snakemake/locks"
    assert locks.is_dir() and any(locks.iterdir()), "no lock left behind by the killed run"
    refused = run_snakemake(finished, target, check=False)
    assert refused.returncode != 0
    assert "results/ml100k/tune/flower/log.csv" in refused.stdout + refused.stderr
    run_snakemake(finished, "--unlock")
    assert not locks.exists() or not any(locks.iterdir())
    # The per-epoch training log exists under its final name, half done: Snakemake must hold it as
    # incomplete (and refuse to go on without --rerun-incomplete).
    incomplete, text = incomplete_files(finished)
    assert "results/ml100k/tune/flower/log.csv" in incomplete, text[-3000:]
    # Every other file under a final name is whole; temporary files (".<name>.*.part") are not final names.
    for path in sorted((finished / "results").rglob("*")):
        rel = str(path.relative_to(finished))
        if not path.is_file() or path.name.endswith(".part") or "/checkpoints/" in rel:
            continue
        if path.name == ".snakemake_timestamp":  # Snakemake's empty marker in directory outputs
            continue
        if any(rel == p or rel.startswith(p + "/") for p in incomplete):
            continue
        assert is_readable(path), f"{rel} is not incomplete for Snakemake but does not parse in full"

    proc = run_snakemake(finished, "--rerun-incomplete", target, timeout=1800)
    log = (finished / "logs/tune/ml100k/flower.log").read_text()
    assert "resumed from" in log and "after epoch 0" in log, log[-3000:]
    resumed = json.loads(flower_metrics.read_text())
    assert _same_json(resumed, uninterrupted), (resumed, uninterrupted)
    assert not last.exists(), "a finished job keeps its checkpoint (a forced rerun would not train)"
    assert incomplete_files(finished)[0] == set()
    again = run_snakemake(finished, "-n", target)
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout[-3000:]


def _same_json(a, b, rel: float = 1e-6) -> bool:
    """Nested JSON equality with floats compared within `rel`."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k], rel) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_json(x, y, rel) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return a == pytest.approx(b, rel=rel, abs=1e-12)
    return a == b


def _mount_tmpfs(target: Path, options: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    target.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")


def _umount(target: Path) -> None:
    subprocess.run(["umount", str(target)], check=True)


def test_full_disk_fails_with_a_clear_message(finished):
    folder = finished / "results/ml100k/tune/flower"
    shutil.rmtree(folder)
    _mount_tmpfs(folder, "size=256k")
    try:
        proc = run_snakemake(finished, "results/ml100k/tune/flower/model", check=False, timeout=1800)
        log = (finished / "logs/tune/ml100k/flower.log").read_text(errors="replace")
        left = sorted(p.name for p in folder.rglob("*") if p.is_file())
    finally:
        _umount(folder)
    text = proc.stdout + proc.stderr + log
    assert proc.returncode != 0
    assert "No space left on device" in text, text[-4000:]
    assert "rule tune" in proc.stdout + proc.stderr
    assert left == [], f"the failed job left files on the full disk: {left}"


def test_read_only_results_fail_with_a_clear_message(finished):
    folder = finished / "results/ml100k/metrics"
    shutil.rmtree(folder)
    if os.geteuid() == 0:
        _mount_tmpfs(folder, "ro,size=64k")
        cause = "Read-only file system"
    else:
        folder.mkdir()
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        cause = "Permission denied"
    try:
        proc = run_snakemake(finished, "results/ml100k/metrics/flower.json", check=False, timeout=600)
    finally:
        if os.geteuid() == 0:
            _umount(folder)
        else:
            folder.chmod(0o755)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert cause in text, text[-4000:]
    assert "results/ml100k/metrics" in text, text[-4000:]


def test_results_that_is_a_file_fails_with_a_clear_message(tmp_path):
    workdir = copy_repo(tmp_path)
    (workdir / "results").write_text("not a folder\n")
    proc = run_snakemake(workdir, check=False, timeout=600)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "results is not a folder" in text, text[-4000:]

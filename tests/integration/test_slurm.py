"""The tiny workflow through `--profile profiles/slurm` on a real one-node SLURM, equal to a local run.

Needs root: the Debian packages are installed with apt-get when missing, and munged, slurmctld and
slurmd are started on localhost (tests/integration/slurm_cluster.py). Skipped, with the reason, where
that is not possible. Run it with:  .venv/bin/pytest -m slurm tests/integration/test_slurm.py
"""

import json
import os
import re
import subprocess
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from flowrec import methods
from tests.integration.conftest import copy_repo, run_snakemake
from tests.integration.slurm_cluster import LocalSlurm, SlurmUnavailable
from tests.integration.test_resources import local_rules

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# Rules the profile sends to a GPU (set-resources ... gpu: 1)
GPU_RULES = {"tune", "decode", "distfit_tune", "distfit_generate"}
# Outputs compared with the local run: everything a user reads
NO_RQ3 = "align:\n  datasets: []\n"
NO_RQ3_CONFIG = ("--configfile", "config/tiny.yaml", "config/no_rq3.yaml")


def is_rq3_output(path: Path) -> bool:
    """An output of RQ3 only (an aligned row's model, predictions, metrics, or Table 5)."""
    aligned = set(methods.names(kind="aligned"))
    return any(
        part in aligned or part.split(".")[0] in aligned for part in path.parts
    ) or path.name.startswith("rq3")


COMPARED = ("tables/*.csv", "metrics/*.json", "predictions/*.parquet", "distfit/*.csv", "data/*.parquet")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root: installs slurmctld/slurmd/munge with apt-get and starts them on localhost")
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm-state"))
    try:
        cluster.start()
    except SlurmUnavailable as err:
        pytest.skip(f"SLURM cannot run here: {err}")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def slurm_run(slurm, tmp_path_factory):
    """(workdir, Snakemake's output, seconds) of the tiny workflow run through the SLURM profile."""
    workdir = copy_repo(tmp_path_factory.mktemp("tiny-slurm"))
    # Without RQ3's 25 jobs (their rules are the tune/decode/evaluate rules this run already sends
    # through SLURM, and make_rq3_table is local): the plugin waits seconds per submission.
    (workdir / "config" / "no_rq3.yaml").write_text(NO_RQ3)
    start = time.monotonic()
    # The profile's first status check waits 10 s (and the plugin backs off by 10 s per check that finds
    # nothing finished); the test cluster keeps finished jobs visible for an hour, so 2 s is safe here.
    proc = run_snakemake(
        workdir,
        *NO_RQ3_CONFIG,
        "--profile",
        "profiles/slurm",
        "--slurm-init-seconds-before-status-checks",
        "2",
        timeout=3600,
    )
    seconds = time.monotonic() - start
    (workdir / "slurm_run_seconds.txt").write_text(f"{seconds:.0f}\n")
    print(f"tiny workflow through SLURM: {seconds:.0f} s")
    return workdir, proc.stdout + proc.stderr, seconds


def planned_jobs(workdir: Path) -> Counter:
    """Jobs per rule of the whole tiny workflow (`snakemake -n --forceall`'s job stats)."""
    out = run_snakemake(workdir, *NO_RQ3_CONFIG, "-n", "--forceall").stdout
    table = out[out.index("Job stats:") :].splitlines()[3:]
    counts = Counter()
    for line in table:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


def slurm_jobs(run_id: str) -> list[dict[str, str]]:
    """The run's jobs as squeue lists them (finished ones too: the test cluster's MinJobAge is 1 h)."""
    fields = "JobID:20,State:20,Comment:200,tres-per-job:40"
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "--name", run_id, "-O", fields],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    jobs = []
    for line in out.splitlines():
        job_id, state, comment, tres = (
            line[:20].strip(),
            line[20:40].strip(),
            line[40:240].strip(),
            line[240:].strip(),
        )
        # the plugin's comment: rule_<rule> or rule_<rule>_wildcards_<values>
        rule = comment.removeprefix("rule_").split("_wildcards_")[0]
        jobs.append({"id": job_id, "state": state, "rule": rule, "tres": tres})
    return jobs


def test_every_job_went_through_slurm(slurm_run):
    workdir, output, _ = slurm_run
    match = re.search(r"SLURM run ID: (\S+)", output)
    assert match, f"no SLURM run ID in Snakemake's output:\n{output[-3000:]}"
    jobs = slurm_jobs(match.group(1))
    not_done = [j for j in jobs if j["state"] != "COMPLETED"]
    assert not not_done, f"SLURM jobs not COMPLETED: {not_done}"
    expected = planned_jobs(workdir)
    for rule in local_rules():  # the target rule and the cheap localrules run inside Snakemake itself
        expected.pop(rule, None)
    assert Counter(j["rule"] for j in jobs) == expected
    for job in jobs:  # the profile's GPU requests reached sbatch (--gpus=1)
        wants_gpu = job["rule"] in GPU_RULES
        assert ("gpu:1" in job["tres"]) == wants_gpu, job
    # and each job left its SLURM log (slurm-keep-successful-logs)
    logs = {p.parent.parent.name for p in (workdir / ".snakemake/slurm_logs").glob("rule_*/*/*.log")}
    logs |= {p.parent.name for p in (workdir / ".snakemake/slurm_logs").glob("rule_*/*.log")}
    assert logs == {f"rule_{rule}" for rule in expected}


def _compare(local: Path, remote: Path) -> None:
    if local.suffix == ".csv":
        pd.testing.assert_frame_equal(pd.read_csv(local), pd.read_csv(remote), check_exact=False, rtol=1e-6)
    elif local.suffix == ".parquet":
        pd.testing.assert_frame_equal(pq.read_table(local).to_pandas(), pq.read_table(remote).to_pandas())
    else:
        _assert_close(json.loads(local.read_text()), json.loads(remote.read_text()), str(local))


def _assert_close(a, b, where: str) -> None:
    """Equal JSON values, floats within a relative 1e-6 (nested dicts and lists too)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _assert_close(a[key], b[key], f"{where}:{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-6, abs=1e-12), where
    else:
        assert a == b, where


def test_outputs_equal_a_local_run(slurm_run, tiny_workflow):
    workdir, _, _ = slurm_run
    remote_files = sorted(p.relative_to(workdir) for p in (workdir / "results").rglob("*") if p.is_file())
    local_files = sorted(
        p.relative_to(tiny_workflow) for p in (tiny_workflow / "results").rglob("*") if p.is_file()
    )
    # report.html is built by test_workflow, not by the DAG; RQ3 is not in the SLURM run (NO_RQ3)
    local_files = [p for p in local_files if p.name != "report.html" and not is_rq3_output(p)]
    assert remote_files == local_files
    compared = 0
    for pattern in COMPARED:
        for local in sorted((tiny_workflow / "results").glob(f"*/{pattern}")):
            if is_rq3_output(local.relative_to(tiny_workflow)):
                continue
            _compare(local, workdir / local.relative_to(tiny_workflow))
            compared += 1
    combined = Path("results/tables/all.csv")
    _compare(tiny_workflow / combined, workdir / combined)
    assert compared >= 10, f"only {compared} files compared"

"""The whole workflow on the tiny config, through Snakemake: every stage's outputs and the report."""

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.integration.conftest import run_snakemake

pytestmark = pytest.mark.slow


def test_tiny_workflow_writes_every_table_row(tiny_workflow):
    table = pd.read_csv(tiny_workflow / "results/ml100k/tables/results.csv")
    assert len(table) == 7, table
    assert table.iloc[:, 1:].notna().all().all(), table
    combined = pd.read_csv(tiny_workflow / "results/tables/all.csv")
    assert len(combined) == len(table)


def test_predictions_name_real_items(tiny_workflow):
    items = pq.read_table(tiny_workflow / "results/ml100k/data/items.parquet").to_pandas()
    titles = set(items["title"])
    for method in ["sasrec", "bigrec", "temp", "d3", "d3_noassist", "ifairlrs", "flower"]:
        preds = pq.read_table(tiny_workflow / f"results/ml100k/predictions/{method}.parquet").to_pandas()
        assert len(preds) > 0
        for ranked in preds["titles"]:
            assert len(set(ranked)) == len(ranked), f"{method}: repeated titles"
            assert set(ranked) <= titles, f"{method}: a title that is no item"


def test_stats_and_distfit(tiny_workflow):
    stats = json.loads((tiny_workflow / "results/ml100k/data/stats.json").read_text())
    assert stats["items"] > 0
    distfit = pd.read_csv(tiny_workflow / "results/ml100k/distfit/table.csv")
    # the reference row (a draw of the tuning-set size from the target itself), then the paper's rows
    assert distfit["Method"].tolist() == [
        "Tuning set (draw from T)",
        "Base",
        "SFT (BIGRec)",
        "DPO",
        "GRPO",
        "Flower",
    ]
    assert distfit["title_JS"].between(0, 0.7).all()  # JS in nats is at most ln 2


def test_nothing_left_to_do_and_report_builds(tiny_workflow):
    dry = run_snakemake(tiny_workflow, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr
    run_snakemake(tiny_workflow, "--report", "results/report.html")
    html = (tiny_workflow / "results/report.html").read_text(errors="replace")
    assert len(html) > 10_000

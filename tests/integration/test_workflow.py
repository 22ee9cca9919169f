"""The whole workflow on the tiny config, through Snakemake: every stage's outputs and the report."""

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from flowrec import methods
from tests.integration.conftest import run_snakemake

pytestmark = pytest.mark.slow


def test_tiny_workflow_writes_every_table_row(tiny_workflow):
    table = pd.read_csv(tiny_workflow / "results/ml100k/tables/results.csv", index_col="Method")
    assert list(table.index[:3]) == ["Random", "MostPop", "SASRec"] and len(table) == 10, table
    assert table.notna().all().all(), table
    # every metric with its bootstrap interval (a mean's interval holds the mean; resampling lowers
    # counts of distinct words and titles, so H, TTR and coverage may lie above theirs)
    for metric in ("HR@1", "NDCG@3", "DGU@3", "H", "TTR"):
        assert (table[f"{metric}_lo"] <= table[f"{metric}_hi"]).all(), metric
    for metric in ("HR@1", "NDCG@3"):
        assert table[metric].between(table[f"{metric}_lo"] - 1e-12, table[f"{metric}_hi"] + 1e-12).all()
    paired = pd.read_csv(tiny_workflow / "results/ml100k/tables/paired.csv")
    assert set(paired["Method"]) == set(table.index) - {"BIGRec"}
    assert (paired["lo"] <= paired["hi"]).all()
    assert (tiny_workflow / "results/ml100k/figures/paired_differences.png").stat().st_size > 1000
    combined = pd.read_csv(tiny_workflow / "results/tables/all.csv")
    assert len(combined) == len(table)


def test_tiny_workflow_builds_table5(tiny_workflow):
    """RQ3 end to end: every aligned row tuned from the tiny BIGRec or Flower, decoded and scored, and
    F_x - B_x per algorithm over the same test samples."""
    table = pd.read_csv(tiny_workflow / "results/ml100k/tables/rq3.csv", index_col="Method")
    assert list(table.index) == [methods.label(m) for m in methods.names(kind="aligned")]
    assert table.notna().all().all(), table
    paired = pd.read_csv(tiny_workflow / "results/ml100k/tables/rq3_paired.csv")
    assert list(dict.fromkeys(paired["Method"])) == [
        f"F_{a} - B_{a}" for a in ("S-DPO", "DMPO", "RosePO", "PPO")
    ]
    assert (paired["lo"] <= paired["hi"]).all() and paired["samples"].eq(table["samples"].iloc[0]).all()
    # the aligned models moved away from their start, and no value head reached the saved model
    for row in ("b_sdpo", "f_ppo"):
        log = pd.read_csv(tiny_workflow / f"results/ml100k/tune/{row}/log.csv")
        assert (log[log["split"] == "train"]["grad_norm"] > 0).all(), row
    from safetensors import safe_open

    with safe_open(str(tiny_workflow / "results/ml100k/tune/f_ppo/model/model.safetensors"), "pt") as fh:
        assert not [key for key in fh.keys() if "value_head" in key]
    text = (tiny_workflow / "results/ml100k/tables/rq3.md").read_text()
    assert "Table 5" in text and "F_S-DPO - B_S-DPO" in text


def test_predictions_name_real_items(tiny_workflow):
    items = pq.read_table(tiny_workflow / "results/ml100k/data/items.parquet").to_pandas()
    titles = set(items["title"])
    for method in [
        "random",
        "mostpop",
        "sasrec",
        "bigrec",
        "temp",
        "d3",
        "d3_noassist",
        "ifairlrs",
        "flower",
        "flower_vocab",
    ]:
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
        "Flower (SubTB over vocab)",
        "Flower (published RQ1 recipe)",
    ]
    assert distfit["title_JS"].between(0, 0.7).all()  # JS in nats is at most ln 2
    assert (distfit["title_JS_lo"] <= distfit["title_JS_hi"]).all()


def test_nothing_left_to_do_and_report_builds(tiny_workflow):
    dry = run_snakemake(tiny_workflow, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr
    run_snakemake(tiny_workflow, "--report", "results/report.html")
    html = (tiny_workflow / "results/report.html").read_text(errors="replace")
    assert len(html) > 10_000

"""The whole workflow on the tiny config, through Snakemake: every stage's outputs and the report."""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from flowrec import methods
from flowrec.sample_metrics import metric_values
from tests.integration.conftest import run_snakemake

pytestmark = pytest.mark.slow


def test_tiny_workflow_writes_every_table_row(tiny_workflow):
    table = pd.read_csv(tiny_workflow / "results/ml100k/tables/results.csv", index_col="Method")
    assert list(table.index[:3]) == ["Random", "MostPop", "SASRec"] and len(table) == 10, table
    assert table.notna().all().all(), table
    # every metric with its interval, and every interval holds its value (docs/method.md section 6:
    # a percentile bootstrap of a mean holds the mean; the jackknife intervals are centred on it)
    metrics = [c for c in table.columns if f"{c}_lo" in table.columns]
    assert {"HR@1", "NDCG@3", "DGU@3", "MGU@3", "H", "TTR", "Coverage@4", "TailShare@4"} <= set(metrics)
    for metric in metrics:
        assert table[metric].between(table[f"{metric}_lo"], table[f"{metric}_hi"]).all(), metric
    paired = pd.read_csv(tiny_workflow / "results/ml100k/tables/paired.csv")
    assert set(paired["Method"]) == set(table.index) - {"BIGRec"}
    assert paired["difference"].between(paired["lo"], paired["hi"]).all(), paired
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


def test_point_values_are_the_interval_codes_statistics(tiny_workflow):
    """Every metric of every method's metrics file equals its statistic computed by the code behind the
    intervals (flowrec.sample_metrics.metric_values) on the method's unresampled per-sample rows."""
    metrics_dir = tiny_workflow / "results/ml100k/metrics"
    names = sorted(p.stem for p in metrics_dir.glob("*.json"))
    assert {"random", "mostpop", "sasrec", "bigrec", "flower", "flower_vocab"} <= set(names), names
    for method in names:
        stored = json.loads((metrics_dir / f"{method}.json").read_text())
        table = pd.read_parquet(metrics_dir / "samples" / f"{method}.parquet")
        ks = sorted(int(k[3:]) for k in stored if k.startswith("HR@"))
        fairness_ks = sorted(int(k[4:]) for k in stored if k.startswith("DGU@"))
        evaluation = stored["evaluation"]
        values = metric_values(
            table,
            np.ones((1, len(table))),
            stored["group_shares_data"],
            evaluation["n_titles"],
            ks,
            fairness_ks,
            evaluation["list_k"],
        )
        assert set(values) == set(stored["ci"]) and stored["samples"] == len(table), method
        for metric, value in values.items():
            assert abs(stored[metric] - value[0]) <= 1e-12, (method, metric, stored[metric], value[0])
            lo, hi = stored["ci"][metric]
            assert lo <= stored[metric] <= hi, (method, metric)


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
    sampled = [c for c in distfit.columns if f"{c}_lo" in distfit.columns]
    assert {"title_JS", "token_KL_TR", "distinct"} <= set(sampled) and "title_JS_exact_lo" not in distfit
    for column in sampled:  # every interval holds the value beside it
        assert distfit[column].between(distfit[f"{column}_lo"], distfit[f"{column}_hi"]).all(), column


def test_nothing_left_to_do_and_report_builds(tiny_workflow):
    dry = run_snakemake(tiny_workflow, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr
    run_snakemake(tiny_workflow, "--report", "results/report.html")
    html = (tiny_workflow / "results/report.html").read_text(errors="replace")
    assert len(html) > 10_000

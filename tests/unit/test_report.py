"""Tables: the paper's row and column order and precision; figures (the popularity groups, the training
curves, distribution fitting): written as PNG from small inputs."""

import numpy as np
import pandas as pd
import pytest

from flowrec.report import (
    combined_table,
    figure_cutoff,
    frequency_matrix,
    order_columns,
    plot_distribution_fit,
    plot_popularity_groups,
    plot_training_curves,
    results_table,
    to_markdown,
    write_table,
)


def _metrics(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    keys = ["HR@1", "NDCG@1", "HR@10", "NDCG@10", "HR@5", "NDCG@5", "DGU@5", "MGU@5", "DGU@10", "MGU@10"]
    out = {k: float(rng.random()) for k in keys}
    out.update(
        {"H": 7.5, "TTR": 0.0123, "Coverage@10": 0.5, "TailShare@10": 0.25, "samples": 200, "method": "x"}
    )
    out["group_shares@5"] = [0.5, 0.3, 0.2]
    out["group_shares@10"] = [0.4, 0.4, 0.2]
    return out


# deliberately shuffled: the table must put the paper's order back
METRICS = {
    m: _metrics(i)
    for i, m in enumerate(["flower", "sasrec", "d3_noassist", "ifairlrs", "bigrec", "d3", "temp"])
}


def test_order_columns_paper_first_then_rest():
    columns = ["samples", "TTR", "HR@10", "Coverage@10", "H", "HR@5", "NDCG@1", "MGU@10", "DGU@10", "NDCG@5"]
    assert order_columns(columns) == [
        "NDCG@5", "HR@5", "DGU@10", "MGU@10", "H", "TTR",
        "NDCG@1", "HR@10", "Coverage@10", "samples",
    ]  # fmt: skip
    # tiny config: no @5/@10 columns, the paper's present ones still first
    assert order_columns(["HR@3", "NDCG@3", "TTR", "H", "DGU@3"]) == ["H", "TTR", "NDCG@3", "HR@3", "DGU@3"]


def test_results_table_rows_columns_and_markdown():
    table = results_table(METRICS)
    assert list(table.index) == ["SASRec", "BIGRec", "Temp", "D3", "D3 (no assistant)", "IFairLRS", "Flower"]
    assert list(table.columns[:6]) == ["NDCG@5", "HR@5", "DGU@10", "MGU@10", "H", "TTR"]
    assert "method" not in table.columns and "group_shares@5" not in table.columns  # strings, lists dropped
    assert table.loc["Flower", "NDCG@5"] == METRICS["flower"]["NDCG@5"]
    md = to_markdown(table, title="Results")
    lines = md.splitlines()
    assert lines[0] == "# Results"
    assert lines[2].startswith("| Method | NDCG@5 | HR@5 | DGU@10 | MGU@10 | H | TTR |")
    sasrec = lines[4].split(" | ")
    # 4 decimals for accuracy, 3 for fairness and diversity, samples as an integer
    assert sasrec[1] == f"{METRICS['sasrec']['NDCG@5']:.4f}"
    assert sasrec[3] == f"{METRICS['sasrec']['DGU@10']:.3f}"
    assert sasrec[5:7] == ["7.500", "0.012"]
    assert lines[4].endswith("| 200 |")


def test_write_and_combine_tables(tmp_path):
    table = results_table({"bigrec": METRICS["bigrec"], "flower": METRICS["flower"]})
    write_table(table, tmp_path / "a.csv", tmp_path / "a.md")
    back = pd.read_csv(tmp_path / "a.csv", index_col="Method")
    assert list(back.index) == ["BIGRec", "Flower"]
    assert back.loc["Flower", "HR@5"] == pytest.approx(METRICS["flower"]["HR@5"], rel=1e-12)  # full precision
    both = combined_table({"cds": back, "games": back.iloc[[1]]})
    assert list(both.columns[:4]) == ["Dataset", "Method", "NDCG@5", "HR@5"]
    assert both[["Dataset", "Method"]].values.tolist() == [
        ["cds", "BIGRec"],
        ["cds", "Flower"],
        ["games", "Flower"],
    ]
    assert to_markdown(both).splitlines()[0].startswith("| Dataset | Method | NDCG@5")


def test_figure_cutoff():
    assert figure_cutoff({"group_shares@5": [], "group_shares@10": []}) == 5
    assert figure_cutoff({"group_shares@1": [], "group_shares@3": []}) == 3  # tiny: 4 returned titles
    assert figure_cutoff({"group_shares@10": []}) == 10
    with pytest.raises(ValueError, match="group_shares"):
        figure_cutoff({"HR@5": 0.1})


def test_figures_are_written(tmp_path):
    k = plot_popularity_groups(METRICS, [0.6, 0.3, 0.1], tmp_path / "groups.png", title="toy")
    assert k == 5
    assert (tmp_path / "groups.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = pd.DataFrame(
        {
            "step": [1, 2, 3, 3],
            "epoch": [0, 0, 0, 0],
            "loss": [3.0, 2.5, 2.0, 2.2],
            "sft_loss": [2.9, 2.4, 1.9, 2.1],
            "subtb_loss": [20.0, 15.0, 10.0, np.nan],
            "lr": [3e-4, 3e-4, 3e-4, np.nan],
            "split": ["train", "train", "train", "valid"],
        }
    )
    plot_training_curves(log, tmp_path / "train.png")
    assert (tmp_path / "train.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="subtb_loss"):
        plot_training_curves(log.drop(columns="subtb_loss"), tmp_path / "bad.png")


def test_distribution_fit_figure_is_written(tmp_path):
    freq = frequency_matrix({"a": 3.0, "b": 1.0}, {"base": ["a", "b"], "flower": ["a", "a", "b", "a"]})
    plot_distribution_fit(freq, tmp_path / "fit.png", title="toy")
    assert (tmp_path / "fit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

"""Result tables (CSV and Markdown) and figures (PNG) from the metrics files of the evaluate stage.

Tables follow the paper's column order (NDCG@5, HR@5, DGU@10, MGU@10, H, TTR, then the rest), each
metric followed by the bounds of its interval, and the paper's row order (SASRec, BIGRec,
Temp, D3, D3 without assistant, IFairLRS, Flower) after the reference rows (Random, MostPop). The
popularity figure is the paper's Figure 2: per method, the share of top-5 recommendations per
popularity group beside each group's share of the training histories. The distribution-fitting figure
is the paper's Figure 4 (RQ1), the training curves those of every tuning run. Every plot is drawn here
or, for the paired comparisons, in flowrec.report_paired; neither imports torch (the figure stages
run in envs/report.yaml).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on the compute nodes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from flowrec import methods  # noqa: E402
from flowrec.distfit.files import sort_target  # noqa: E402
from flowrec.distfit.methods import LABELS as DISTFIT_LABELS  # noqa: E402
from flowrec.io import atomic_path, write_text  # noqa: E402
from flowrec.metrics import FIGURE_K  # noqa: E402

# Row labels and the paper's row order, from the method registry.
METHOD_LABELS = {name: method.label for name, method in methods.REGISTRY.items()}
PAPER_COLUMNS = ["NDCG@5", "HR@5", "DGU@10", "MGU@10", "H", "TTR"]
# After the paper's columns: the other cut-offs, then the metrics beyond the paper, then the count.
_REST_ORDER = ["NDCG", "HR", "DGU", "MGU", "Coverage", "TailShare", "samples"]
# Markdown precision as in the paper's tables: 4 decimals for accuracy, 3 for the rest.
_DIGITS = {"NDCG": 4, "HR": 4, "Coverage": 4, "TailShare": 4}


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


# Suffixes of a metric's interval bounds in the CSV tables (results.csv, all.csv).
BOUNDS = ("_lo", "_hi")


def base_metric(column: str) -> str:
    """The metric of a column: `HR@5_lo` -> `HR@5`."""
    return next((column[: -len(b)] for b in BOUNDS if column.endswith(b)), column)


def _metric_key(column: str) -> tuple[int, int, str]:
    """Sort key: position in _REST_ORDER, then K, then name (unknown metrics last)."""
    name, _, k = column.partition("@")
    rank = _REST_ORDER.index(name) if name in _REST_ORDER else len(_REST_ORDER)
    return rank, int(k) if k.isdigit() else 0, column


def order_columns(columns: Sequence[str]) -> list[str]:
    """The paper's columns that are present, in the paper's order, then every other column; each metric
    followed by its interval bounds (`_lo`, `_hi`) when present."""
    metrics = list(dict.fromkeys(base_metric(c) for c in columns))
    first = [c for c in PAPER_COLUMNS if c in metrics]
    ordered = first + sorted((c for c in metrics if c not in first), key=_metric_key)
    return [c for m in ordered for c in (m, *(m + b for b in BOUNDS)) if c in columns]


def scalar_metrics(metrics: Mapping[str, object]) -> dict[str, float]:
    """The table cells of one metrics file: numbers, and the bounds of each metric's interval (`ci`,
    as `{metric}_lo`, `{metric}_hi`); lists such as group shares are for figures."""
    out = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    for metric, (lo, hi) in dict(metrics.get("ci", {})).items():
        out[f"{metric}_lo"], out[f"{metric}_hi"] = lo, hi
    return out


def results_table(metrics_by_method: Mapping[str, Mapping[str, object]]) -> pd.DataFrame:
    """One row per method (paper order, unknown methods after), one column per metric (paper order),
    each followed by its interval bounds."""
    order = [m for m in METHOD_LABELS if m in metrics_by_method]
    order += [m for m in metrics_by_method if m not in METHOD_LABELS]
    rows = {method_label(m): scalar_metrics(metrics_by_method[m]) for m in order}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "Method"
    return table[order_columns(list(table.columns))]


def combined_table(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per-dataset tables stacked with a Dataset column first; columns in the paper's order."""
    parts = [t.reset_index().assign(Dataset=name) for name, t in tables.items()]
    table = pd.concat(parts, ignore_index=True)
    metrics = order_columns([c for c in table.columns if c not in ("Dataset", "Method")])
    return table[["Dataset", "Method", *metrics]]


def _format_cell(column: str, value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if not isinstance(value, int | float | np.number):
        return str(value)
    if column == "samples":
        return str(int(value))
    return f"{value:.{_DIGITS.get(base_metric(column).partition('@')[0], 3)}f}"


def with_intervals(table: pd.DataFrame) -> pd.DataFrame:
    """Text cells `value [lo, hi]` for every metric with bound columns (the paper's precision); other
    columns formatted as they are. For the Markdown tables."""
    out = pd.DataFrame(index=table.index)
    for column in table.columns:
        if base_metric(column) != column:
            continue
        lo, hi = f"{column}_lo", f"{column}_hi"
        cells = [_format_cell(column, v) for v in table[column]]
        if lo in table.columns and hi in table.columns:
            bounds = zip(table[lo], table[hi], strict=True)
            cells = [
                f"{c} [{_format_cell(column, a)}, {_format_cell(column, b)}]" if c else c
                for c, (a, b) in zip(cells, bounds, strict=True)
            ]
        out[column] = cells
    return out


def to_markdown(table: pd.DataFrame, title: str | None = None) -> str:
    """A GitHub Markdown table with the paper's precision (index included when it is named)."""
    frame = table.reset_index() if table.index.name else table
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_format_cell(c, v) for c, v in zip(header, row, strict=True)) + " |")
    prefix = f"# {title}\n\n" if title else ""
    return prefix + "\n".join(lines) + "\n"


def write_table(
    table: pd.DataFrame, csv_path: str | Path, md_path: str | Path, title: str | None = None
) -> None:
    """The table as CSV (full precision) and Markdown (rounded, intervals in the metric's cell), both
    written atomically."""
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=bool(table.index.name))
    write_text(to_markdown(with_intervals(table), title), md_path)


def read_metrics(paths_by_method: Mapping[str, str | Path]) -> dict[str, dict[str, object]]:
    return {m: json.loads(Path(p).read_text()) for m, p in paths_by_method.items()}


# ----------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------


def figure_cutoff(metrics: Mapping[str, object], wanted: int = FIGURE_K) -> int:
    """The K of the popularity figure: `wanted` if stored, else the largest stored K below it, else the smallest."""
    stored = sorted(int(m.group(1)) for k in metrics if (m := re.fullmatch(r"group_shares@(\d+)", k)))
    if not stored:
        raise ValueError(
            "metrics hold no group_shares@K entries (written by flowrec.sample_metrics.point_values)"
        )
    below = [k for k in stored if k <= wanted]
    return below[-1] if below else stored[0]


def plot_popularity_groups(
    metrics_by_method: Mapping[str, Mapping[str, object]],
    data_shares: Sequence[float],
    path: str | Path,
    title: str = "",
) -> int:
    """Paper's Figure 2: one panel per method, bars of top-K recommendation share per group beside the
    training-history share (group 1 = most popular). Returns the K used (5, or the nearest stored)."""
    methods = [m for m in METHOD_LABELS if m in metrics_by_method]
    methods += [m for m in metrics_by_method if m not in METHOD_LABELS]
    k = min(figure_cutoff(metrics_by_method[m]) for m in methods)
    n_groups = len(data_shares)
    x = np.arange(n_groups)
    n_cols = min(4, len(methods))
    n_rows = -(-len(methods) // n_cols)
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(3.2 * n_cols, 2.6 * n_rows + 0.6),
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    top = max(max(data_shares), *(max(metrics_by_method[m][f"group_shares@{k}"]) for m in methods))
    for ax, method in zip(axes.flat, methods, strict=False):
        rec = metrics_by_method[method][f"group_shares@{k}"]
        ax.bar(x - 0.2, data_shares, width=0.4, color="0.7", label="training histories")
        ax.bar(x + 0.2, rec, width=0.4, color="tab:blue", label=f"top-{k} recommendations")
        ax.set_title(method_label(method), fontsize=10)
        ax.set_xticks(x, [str(g + 1) for g in x], fontsize=8)
        ax.set_ylim(0, top * 1.1 if top > 0 else 1)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes.flat[len(methods) :]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("share")
    for ax in axes[-1, :]:
        ax.set_xlabel("popularity group (1 = most popular)", fontsize=8)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if title:
        fig.suptitle(title)
    fig.legend(handles, labels, loc="outside lower center", ncol=2, frameon=False)
    _save(fig, path)
    return k


def plot_training_curves(log: pd.DataFrame, path: str | Path, title: str = "") -> None:
    """A training log (step, epoch, loss, sft_loss, subtb_loss, lr, split): train curves, valid points.

    The log of every tuning run: the pipeline's loop (SubTB only for Flower) and distfit's trl runs
    (SFT and SubTB columns empty); a panel without finite values stays empty.

    Panels: total loss, SFT loss, SubTB loss (log scale when positive; the two losses differ by orders
    of magnitude, docs/method.md section 4) and the learning rate.
    """
    missing = {"step", "loss", "sft_loss", "subtb_loss", "lr", "split"} - set(log.columns)
    if missing:
        raise ValueError(f"training log lacks columns {sorted(missing)}")
    panels = [
        ("loss", "total loss"),
        ("sft_loss", "SFT loss"),
        ("subtb_loss", "SubTB loss"),
        ("lr", "learning rate"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 2.8))
    for ax, (column, label) in zip(axes, panels, strict=True):
        for split, style in (("train", {"lw": 1.0}), ("valid", {"marker": "o", "ms": 4, "lw": 1.0})):
            rows = log[(log["split"] == split) & np.isfinite(pd.to_numeric(log[column], errors="coerce"))]
            if column == "lr" and split == "valid" or rows.empty:
                continue
            ax.plot(rows["step"], rows[column].astype(float), label=split, **style)
        values = pd.to_numeric(log[column], errors="coerce").dropna()
        if column != "lr" and len(values) and (values > 0).all():
            ax.set_yscale("log")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def frequency_matrix(target: Mapping[str, float], samples: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """Share of each target title (rows, sorted by target count) in T and in each method's samples."""
    order = list(sort_target(target))
    total = sum(target.values())
    out = {"target": [target[t] / total for t in order]}
    for method, titles in samples.items():
        counts = pd.Series(list(titles), dtype=str).value_counts()
        out[method] = [counts.get(t, 0) / max(len(titles), 1) for t in order]
    return pd.DataFrame(out, index=pd.Index(order, name="title"))


def plot_distribution_fit(freq: pd.DataFrame, path: str | Path, title: str = "") -> None:
    """The paper's Figure 4: per method, target vs generated share over titles sorted by target share
    (`freq`: frequency_matrix)."""
    methods = [c for c in freq.columns if c != "target"]
    ncols = min(3, len(methods))
    nrows = math.ceil(len(methods) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), sharex=True, sharey=True)
    axes = np.atleast_1d(axes).ravel()
    x = np.arange(1, len(freq) + 1)
    for ax, method in zip(axes, methods, strict=False):
        ax.bar(x, freq["target"], width=1.0, color="0.75", label="target T")
        ax.plot(x, freq[method], "o-", ms=2.5, lw=1, color="C3", label="generated R")
        ax.set_title(DISTFIT_LABELS.get(method, method), fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[len(methods) :]:
        ax.axis("off")
    for ax in axes[-ncols:]:
        ax.set_xlabel("title rank by target frequency")
    for ax in axes[::ncols]:
        ax.set_ylabel("share of titles")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def _save(fig: plt.Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)

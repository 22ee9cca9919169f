"""The paired comparison with BIGRec: its table (CSV long, Markdown wide) and its figure.

Input: flowrec.sample_metrics.paired_differences of every method against the baseline, one frame per
method. Each cell reads `difference [lo, hi]`, marked `*` when the interval excludes zero; the figure
has one panel per metric with every method's difference and interval around a line at zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from flowrec.metrics import MetricsSettings
from flowrec.report import _format_cell, _save, method_label, order_columns, plt, to_markdown
from flowrec.sample_metrics import paired_differences

PAIRED_COLUMNS = ["Method", "metric", "difference", "lo", "hi", "excludes_zero", "samples"]


def paired_comparisons(
    pairs: Mapping[str, tuple[str, str]],
    by_method: Mapping[str, Mapping],
    per_sample: Mapping[str, pd.DataFrame],
    settings: MetricsSettings,
) -> dict[str, pd.DataFrame]:
    """{key: method - baseline} for every `key: (method, baseline)` of `pairs`, on the samples both
    scored (flowrec.sample_metrics.paired_differences; the baseline's metrics file gives the data's
    group shares, the catalogue size and the list length)."""
    out = {}
    for key, (method, baseline) in pairs.items():
        evaluation = by_method[baseline]["evaluation"]
        out[key] = paired_differences(
            per_sample[method],
            per_sample[baseline],
            by_method[baseline]["group_shares_data"],
            evaluation["n_titles"],
            evaluation["list_k"],
            settings,
        )
    return out


def paired_table(diffs_by_method: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Long table: one row per (method, metric), methods labelled and in the given order."""
    if not diffs_by_method:
        return pd.DataFrame(columns=PAIRED_COLUMNS)
    parts = [d.assign(Method=method_label(m)) for m, d in diffs_by_method.items()]
    return pd.concat(parts, ignore_index=True)[PAIRED_COLUMNS]


def paired_markdown(long: pd.DataFrame, baseline: str, level: float) -> str:
    """Wide Markdown: a row per method, a column per metric (paper order), cells `+d [lo, hi]` and `*`
    where the interval excludes zero."""
    head = (
        f"## Difference to {baseline} (paired over the same test samples: HR, NDCG bootstrap, the other "
        f"metrics jackknife; {level:.0%} intervals; * = the interval excludes 0)\n\n"
    )
    if long.empty:
        return head + "No method to compare.\n"
    metrics = order_columns(list(dict.fromkeys(long["metric"])))
    cells = {}
    for method, rows in long.groupby("Method", sort=False):
        by_metric = rows.set_index("metric")
        cells[method] = {
            m: (
                f"{'+' if r.difference > 0 else ''}{_format_cell(m, r.difference)} "
                f"[{_format_cell(m, r.lo)}, {_format_cell(m, r.hi)}]{' *' if r.excludes_zero else ''}"
            )
            for m, r in by_metric.iterrows()
        }
    wide = pd.DataFrame.from_dict(cells, orient="index")[metrics]
    wide.index.name = "Method"
    samples = int(long["samples"].max())
    return head + to_markdown(wide) + f"\n{samples} paired samples per comparison.\n"


def plot_paired_differences(long: pd.DataFrame, path: str, baseline: str, title: str = "") -> None:
    """One panel per metric: each method's difference to the baseline with its interval (filled markers
    where it excludes zero), and a line at zero."""
    metrics = order_columns(list(dict.fromkeys(long["metric"]))) if not long.empty else []
    ncols = min(4, max(len(metrics), 1))
    nrows = max(math.ceil(len(metrics) / ncols), 1)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.3 * ncols, 0.3 * long["Method"].nunique() + 1.6 * nrows)
    )
    axes = np.atleast_1d(axes).ravel()
    methods = list(dict.fromkeys(long["Method"]))[::-1]  # first method on top
    y = np.arange(len(methods))
    for ax, metric in zip(axes, metrics, strict=False):
        rows = long[long["metric"] == metric].set_index("Method").loc[methods]
        d = rows["difference"].to_numpy(float)
        # the interval as a segment around the difference (a jackknife interval is centred on it)
        ax.hlines(y, rows["lo"].to_numpy(float), rows["hi"].to_numpy(float), color="tab:blue", lw=1.2)
        excl = rows["excludes_zero"].to_numpy(bool)
        ax.scatter(d[excl], y[excl], color="tab:blue", zorder=3, s=16)
        ax.scatter(d[~excl], y[~excl], facecolors="white", edgecolors="tab:blue", zorder=3, s=16)
        ax.axvline(0.0, color="0.3", lw=0.8)
        ax.set_yticks(y, methods if ax in axes[::ncols] else [""] * len(methods), fontsize=8)
        ax.set_title(metric, fontsize=10)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[len(metrics) :]:
        ax.axis("off")
    if not metrics:
        axes[0].text(0.5, 0.5, "no method to compare", ha="center", va="center")
    fig.suptitle(f"{title}: difference to {baseline} (filled: interval excludes 0)".strip(": "), fontsize=10)
    fig.tight_layout()
    _save(fig, path)

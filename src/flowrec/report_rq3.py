"""Table 5 (RQ3): each alignment algorithm started from BIGRec (B_) and from Flower (F_), side by side,
with the paired difference F_x - B_x over the same test samples (docs/method.md section 10).

Input: the metrics files and per-sample files of the aligned rows (flowrec.methods, kind `aligned`);
the difference is flowrec.report_paired.paired_comparisons of F_x against B_x (paired bootstrap
for HR/NDCG, paired jackknife for the set statistics).
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from flowrec import methods
from flowrec.report import results_table, to_markdown, with_intervals
from flowrec.report_paired import paired_markdown

PAIR_COLUMNS = ["Method", "metric", "difference", "lo", "hi", "excludes_zero", "samples"]


def start_pairs(names: list[str]) -> list[tuple[str, str, str]]:
    """(family, B_ row, F_ row) of every algorithm whose two rows are both in `names`, registry order."""
    pairs = []
    for family in methods.families_of_kind("aligned"):
        rows = {methods.REGISTRY[n].start: n for n in names if methods.REGISTRY[n].family == family}
        if {"bigrec", "flower"} <= set(rows):
            pairs.append((family, rows["bigrec"], rows["flower"]))
    return pairs


def rq3_pair_table(differences: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Long table of F_x - B_x: one row per (algorithm, metric); `Method` reads `F_x - B_x`."""
    parts = []
    for family, frame in differences.items():
        b_label, f_label = (methods.REGISTRY[f"{p}_{family}"].label for p in ("b", "f"))
        parts.append(frame.assign(Method=f"{f_label} - {b_label}"))
    if not parts:
        return pd.DataFrame(columns=PAIR_COLUMNS)
    return pd.concat(parts, ignore_index=True)[PAIR_COLUMNS]


def rq3_markdown(
    by_method: Mapping[str, Mapping], pairs_long: pd.DataFrame, title: str, level: float, draws: int
) -> str:
    """Table 5 as Markdown: the aligned rows with their intervals, then F_x - B_x per algorithm."""
    table = results_table(by_method)
    text = to_markdown(with_intervals(table), title)
    text += (
        f"\n{level:.0%} intervals over the test samples: HR and NDCG percentile bootstrap ({draws} draws), "
        "the other metrics grouped jackknife.\n\n"
    )
    return text + paired_markdown(pairs_long, "the same algorithm started from BIGRec (F_x - B_x)", level)

"""The one check of the metric cut-offs against the returned list (standard library only: Snakemake's own
process imports it when it parses rules/evaluate.smk, before any job runs)."""

from __future__ import annotations

from collections.abc import Sequence


def check_cutoffs(ks: Sequence[int], fairness_ks: Sequence[int], num_return: int) -> None:
    """Refuse any @K larger than the returned list: the published evaluation reported @20 from 10 beams,
    and a list shorter than K scores @K as @num_return without any sign of it."""
    for name, values in (("metrics.ks", ks), ("metrics.fairness_ks", fairness_ks)):
        too_large = [k for k in values if k > num_return]
        if too_large:
            raise ValueError(
                f"config: {name} {list(values)} has K={too_large} larger than decode.num_return={num_return}; "
                f"an @K metric needs at least K returned titles per sample: lower the K or return more titles"
            )

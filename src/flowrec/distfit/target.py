"""The settings of a distfit run and its target set T = {title: count} (docs/method.md sections 3 and 6).

T comes from a JSON file (`distfit.target`) or is the `top_n` titles of a dataset by train-history
frequency. The trie over T's titles, with the counts as item rewards R(i), constrains every model's
sampling and gives Flower its rewards; SFT tunes on titles drawn from T in proportion to the counts.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from flowrec.distfit.files import sort_target
from flowrec.prompts import title_ids_batch
from flowrec.settings import settings_from_block, settings_to_block
from flowrec.trie import Trie

log = logging.getLogger(__name__)


@dataclass
class DistfitSettings:
    """The `distfit:` config block (config/schema.yaml holds the defaults); `lambda_` is the key `lambda`."""

    datasets: list[str]  # datasets whose titles form the default target set
    target: str | None  # JSON {title: count}; None: the top_n titles of the dataset
    top_n: int  # titles in the default target set
    train_samples: int  # tuning samples (titles, pairs, or completions) per method
    epochs: int  # epochs over the tuning samples
    batch_size: int  # samples per optimizer step
    micro_batch_size: int | None  # samples per forward pass (None: batch_size; gradients accumulate)
    learning_rate: float  # AdamW, linear decay to zero, no warm-up (all methods)
    lambda_: float  # Flower: L = L_SFT + lambda * L_SubTB
    sample_temperature: float  # Flower: temperature of the titles SubTB scores (1: on-policy)
    dpo_beta: float  # DPO temperature beta
    rl_generations: int  # GRPO group size: completions per prompt
    generate: int | None  # titles generated per model; None: train_samples
    generate_batch_size: int  # titles sampled in parallel
    seed: int

    def __post_init__(self) -> None:
        # Every method accumulates gradients over whole micro batches up to one optimizer step.
        if self.micro_batch_size is None:
            self.micro_batch_size = self.batch_size
        if self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"distfit.batch_size ({self.batch_size}) must be a multiple of "
                f"distfit.micro_batch_size ({self.micro_batch_size})"
            )

    @classmethod
    def from_block(cls, block: Mapping[str, object] | None) -> DistfitSettings:
        """From (a subset of) the config block; keys it leaves out take the schema's defaults."""
        return settings_from_block(cls, block, "distfit")

    @property
    def n_generate(self) -> int:
        return self.generate if self.generate is not None else self.train_samples

    def in_effect(self, given: Mapping[str, object] | None) -> str:
        """For the logs: every key with the value in effect (micro_batch_size resolved), and the keys that
        the block `given` left to the schema's defaults (a rule passes only the keys its stage reads)."""
        block = settings_to_block(self)
        defaulted = sorted(set(block) - set(given or {}))
        return f"{block} (schema defaults: {defaulted})"


def _reject_duplicates(path: Path):
    def hook(pairs: list[tuple[str, object]]) -> dict:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"{path}: title {key!r} appears more than once in the target set")
            seen.add(key)
        return dict(pairs)

    return hook


def read_target_file(path: str | Path, item_titles: Sequence[str], dataset: str) -> dict[str, float]:
    """A target set {title: count} from JSON, checked against the dataset's item titles.

    Errors name the file and the title: a title that is no item title of `dataset`, a title given
    twice (a repeated JSON key, which json.load would otherwise silently collapse), a count that is
    not a positive number, or fewer than two titles.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_reject_duplicates(path))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object {{title: count}}, got {type(raw).__name__}")
    known = set(item_titles)
    counts: dict[str, float] = {}
    for title, count in raw.items():
        if title not in known:
            raise ValueError(f"{path}: title {title!r} is not an item title of dataset {dataset!r}")
        if (
            isinstance(count, bool)
            or not isinstance(count, int | float)
            or not math.isfinite(count)
            or count <= 0
        ):
            raise ValueError(f"{path}: title {title!r} has count {count!r}; expected a positive number")
        counts[title] = float(count)
    if len(counts) < 2:
        raise ValueError(f"{path}: a target set needs at least two titles, got {len(counts)}")
    return sort_target(counts)


def top_titles(groups: pd.DataFrame, top_n: int) -> dict[str, float]:
    """The `top_n` most frequent titles of trie/groups.parquet (train-history frequency) with their counts.

    Titles never seen in train histories are left out (count 0 is no target mass); ties by title.
    """
    seen = groups.loc[groups["frequency"] > 0, ["title", "frequency"]]
    ranked = seen.sort_values(["frequency", "title"], ascending=[False, True], kind="stable").head(top_n)
    if len(ranked) < top_n:
        log.warning(
            "only %d titles occur in train histories; the target set has %d < top_n=%d",
            len(ranked),
            len(ranked),
            top_n,
        )
    if len(ranked) < 2:
        raise ValueError(
            f"target set: fewer than two titles with a positive train-history frequency ({len(ranked)})"
        )
    return sort_target({str(t): float(c) for t, c in zip(ranked["title"], ranked["frequency"], strict=True)})


def draw_titles(target: Mapping[str, float], n: int, seed: int) -> list[str]:
    """`n` titles drawn i.i.d. in proportion to the counts (the SFT tuning set), seeded."""
    titles = list(target)
    p = np.fromiter(target.values(), np.float64, len(titles))
    idx = np.random.default_rng(seed).choice(len(titles), size=n, p=p / p.sum())
    return [titles[i] for i in idx]


def target_trie(target: Mapping[str, float], tokenizer) -> Trie:
    """The trie over the target titles only, R(i) = count (docs/method.md section 3); paths are title_ids."""
    titles = list(target)
    return Trie.build(titles, title_ids_batch(tokenizer, titles), [float(target[t]) for t in titles])

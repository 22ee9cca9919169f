"""The settings of a distfit run and its target set T = {title: count} (docs/method.md sections 3 and 6).

T comes from a file (`distfit.target`: JSON {title: count} or CSV title,count, any titles) or, as in
the paper, is `target_size` titles sampled from a dataset with their train-history counts. The trie over T's titles, with the counts as item rewards R(i), constrains every model's
sampling and gives Flower its rewards; SFT tunes on titles drawn from T in proportion to the counts.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
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
    target: str | None  # JSON {title: count} or CSV title,count; None: target_size sampled titles
    target_size: int  # titles sampled from the dataset for the default target set (the paper: 100)
    target_seed: int  # seed of that draw
    train_samples: int  # tuning samples (titles, pairs, or completions) per method
    epochs: int  # epochs over the tuning samples
    batch_size: int  # samples per optimizer step
    micro_batch_size: int | None  # samples per forward pass (None: batch_size; gradients accumulate)
    learning_rate: float  # AdamW, linear decay to zero, no warm-up (all methods)
    lambda_: float  # Flower: L = L_SFT + lambda * L_SubTB
    sample_temperature: float  # Flower: temperature of the titles SubTB scores (1: on-policy)
    published_learning_rate: float  # flower_published: its own AdamW learning rate (the published 1e-5)
    published_subtb_decay: float  # flower_published: SubTB segment-length decay (the published 1.0)
    published_replay_threshold: float  # flower_published: replay until the replay loss is under this
    published_off_trie_log_reward: float  # flower_published: log reward of a sequence leaving the trie
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


def _checked_count(path: Path, where: str, title: object, count: object) -> float:
    """A positive finite count of a non-empty title, else a ValueError naming the file and `where`."""
    if not isinstance(title, str) or not title.strip():
        raise ValueError(f"{path}: {where}: empty title {title!r}; every title needs text")
    if (
        isinstance(count, bool)
        or not isinstance(count, int | float)
        or not math.isfinite(count)
        or count <= 0
    ):
        raise ValueError(f"{path}: {where}: title {title!r} has count {count!r}; expected a positive number")
    return float(count)


def _read_json_target(path: Path) -> list[tuple[str, str, object]]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_reject_duplicates(path))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object {{title: count}}, got {type(raw).__name__}")
    return [(f"title {title!r}", title, count) for title, count in raw.items()]


def _read_csv_target(path: Path) -> list[tuple[str, str, object]]:
    try:
        frame = pd.read_csv(path, dtype={"title": str}, keep_default_na=False, skip_blank_lines=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable CSV ({err})") from err
    if list(frame.columns) != ["title", "count"]:
        raise ValueError(f"{path}: expected the CSV columns title,count, got {list(frame.columns)}")
    counts = pd.to_numeric(frame["count"], errors="coerce")
    rows = []
    seen: dict[str, int] = {}
    for row, (title, raw, count) in enumerate(zip(frame["title"], frame["count"], counts, strict=True)):
        line = row + 2  # 1-based, after the header
        if title in seen:
            raise ValueError(
                f"{path}: line {line}: title {title!r} appears more than once in the target set "
                f"(first on line {seen[title]})"
            )
        seen[title] = line
        rows.append((f"line {line}", title, raw if math.isnan(count) else float(count)))
    return rows


def read_target_file(path: str | Path) -> dict[str, float]:
    """A target set {title: count} from a JSON object {title: count} or a CSV with columns title,count.

    The titles may be any text (no dataset is needed: the trie is built from them with the model's
    tokenizer). Errors name the file and the title (and the CSV line): a title given twice (a repeated
    JSON key, which json.load would otherwise silently collapse), an empty title, a count that is not a
    positive number, or fewer than two titles.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"distfit.target: {path} is not a file")
    rows = _read_csv_target(path) if path.suffix.lower() == ".csv" else _read_json_target(path)
    counts = {title: _checked_count(path, where, title, count) for where, title, count in rows}
    if len(counts) < 2:
        raise ValueError(f"{path}: a target set needs at least two titles, got {len(counts)}")
    return sort_target(counts)


def sampled_titles(groups: pd.DataFrame, size: int, seed: int) -> dict[str, float]:
    """The paper's RQ1 target (docs/method.md section 6): `size` titles drawn uniformly without
    replacement among the titles of trie/groups.parquet that occur in train histories, each with its
    train-history frequency as count (so the target keeps the dataset's long tail). Seeded."""
    seen = groups.loc[groups["frequency"] > 0, ["title", "frequency"]].sort_values("title", kind="stable")
    if len(seen) < 2:
        raise ValueError(
            f"target set: fewer than two titles with a positive train-history frequency ({len(seen)})"
        )
    if len(seen) < size:
        log.warning("only %d titles occur in train histories; the target set has them all", len(seen))
    pick = np.sort(np.random.default_rng(seed).choice(len(seen), size=min(size, len(seen)), replace=False))
    chosen = seen.iloc[pick]
    return sort_target({str(t): float(c) for t, c in zip(chosen["title"], chosen["frequency"], strict=True)})


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

"""Distribution fitting without history (the paper's RQ1, method.md sections 4 and 6).

A target set T = {title: count} (a JSON file, or the `top_n` titles of a dataset by train-history
frequency) becomes a trie over those titles only, with the counts as item rewards R(i). From one base
model and the history-free prompt ("Recommend an item."), each method is tuned on the same budget of
`train_samples` samples (same batch size, learning rate, schedule and epochs):
- sft (BIGRec): cross-entropy on titles drawn i.i.d. in proportion to the counts;
- flower: the same SFT samples plus lambda * SubTB on titles sampled from the policy at
  `sample_temperature` (1: on-policy, the paper's setting), rewards = counts;
- dpo and grpo (trl, see flowrec.distfit_trl).
Then every model (and the untuned base) samples `generate` titles at temperature 1 under the trie, and
the table compares T with the generated distribution R (title- and token-level KL both ways and JS,
flowrec.metrics.distribution_divergences).

SFT and Flower run through the pipeline's own training loop (flowrec.tune.loop.train: SFT is its
`bigrec` method), so the SubTB loss, the on-policy sampler and the optimiser are the main experiment's.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from flowrec.io import write_parquet
from flowrec.metrics import aligned_counts, distribution_divergences, js_divergence
from flowrec.prompts import title_ids_batch
from flowrec.sampling import sample_titles
from flowrec.trie import Trie
from flowrec.tune.data import TuneData

log = logging.getLogger(__name__)

TUNED = ("sft", "dpo", "grpo", "flower")
METHODS = ("base", *TUNED)
LABELS = {"base": "Base", "sft": "SFT (BIGRec)", "dpo": "DPO", "grpo": "GRPO", "flower": "Flower"}
# The tuning set itself is an i.i.d. draw of the same size from T: its divergence from T is the floor
# that sampling noise alone sets for any model (a perfect model's samples are such a draw too).
TUNING_SET = "tuning_set"
LABELS[TUNING_SET] = "Tuning set (draw from T)"


@dataclass
class DistfitSettings:
    """The `distfit:` config block (config/schema.yaml); `lambda_` is the key `lambda`."""

    datasets: list[str] | None = None  # datasets whose titles form the default target set
    target: str | None = None  # JSON {title: count}; None: the top_n titles of the dataset
    top_n: int = 50  # titles in the default target set
    train_samples: int = 256  # tuning samples (titles, pairs, or completions) per method
    epochs: int = 1  # epochs over the tuning samples
    batch_size: int = 16  # samples per optimizer step
    micro_batch_size: int | None = None  # samples per forward pass (None: batch_size; gradients accumulate)
    learning_rate: float = 3e-4  # AdamW, linear decay to zero, no warm-up (all methods)
    lambda_: float = 1.0  # Flower: L = L_SFT + lambda * L_SubTB
    sample_temperature: float = 1.0  # Flower: temperature of the titles SubTB scores (1: on-policy)
    dpo_beta: float = 0.1  # DPO temperature beta
    rl_generations: int = 8  # GRPO group size: completions per prompt
    generate: int | None = None  # titles generated per model; None: train_samples
    generate_batch_size: int = 64  # titles sampled in parallel
    seed: int = 42

    @classmethod
    def from_params(cls, params: Mapping[str, object]) -> DistfitSettings:
        """From (a subset of) the config block; an unknown key raises naming it."""
        block = {("lambda_" if k == "lambda" else k): v for k, v in dict(params).items()}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(block) - known)
        if unknown:
            raise ValueError(f"config block `distfit`: unknown key(s) {unknown}; expected {sorted(known)}")
        settings = cls(**block)
        if settings.micro_batch_size is None:
            settings.micro_batch_size = settings.batch_size
        if settings.batch_size % settings.micro_batch_size:
            raise ValueError(
                f"distfit.batch_size ({settings.batch_size}) must be a multiple of "
                f"distfit.micro_batch_size ({settings.micro_batch_size})"
            )
        return settings

    @property
    def n_generate(self) -> int:
        return self.generate if self.generate is not None else self.train_samples


# ------------------------------------------------------------------------------------------------
# Target set
# ------------------------------------------------------------------------------------------------


def sort_target(counts: Mapping[str, float]) -> dict[str, float]:
    """{title: count} by count (descending), ties by title: the order of the table and the figure."""
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


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
    """The trie over the target titles only, R(i) = count (method.md section 3); paths are title_ids."""
    titles = list(target)
    return Trie.build(titles, title_ids_batch(tokenizer, titles), [float(target[t]) for t in titles])


# ------------------------------------------------------------------------------------------------
# SFT and Flower through the shared training loop
# ------------------------------------------------------------------------------------------------


def tune_data(titles: Sequence[str], trie: Trie, prompt: Sequence[int]) -> TuneData:
    """TuneData of history-free samples: the one prompt, each title's trie path as target."""
    ptr, tokens = np.asarray(trie.title_ptr), np.asarray(trie.title_tokens)
    ids = np.array([trie.title_index[t] for t in titles], dtype=np.int64)
    prompt_t = torch.tensor(list(prompt), dtype=torch.long)
    return TuneData(
        rows=np.arange(len(titles), dtype=np.int64),
        prompts=[prompt_t] * len(titles),
        targets=[torch.from_numpy(tokens[ptr[i] : ptr[i + 1]].astype(np.int64)) for i in ids],
        weights=torch.ones(len(titles)),
        target_titles=torch.from_numpy(ids),
    )


def train_with_loop(
    method: str,
    model,
    trie: Trie,
    prompt: Sequence[int],
    tuning_titles: Sequence[str],
    target: Mapping[str, float],
    settings: DistfitSettings,
    pad_id: int,
    log_csv: str | Path,
    loss_png: str | Path,
) -> None:
    """Tune `model` in place with SFT (`sft`) or Flower (`flower`) through flowrec.tune.loop.train.

    The loop's validation loss (it keeps the best epoch) is the SFT loss on a second seeded draw from
    T of a quarter of the tuning set's size. Its checkpoints go to a temporary folder: a distfit run
    takes minutes and must never resume from weights trained on another target set.
    """
    from flowrec.tune.forward import FlowerObjective
    from flowrec.tune.loop import FlowerSettings, TrainPaths, TuneSettings, train

    if method not in ("sft", "flower"):
        raise ValueError(f"train_with_loop: method {method!r}; expected sft or flower")
    valid_titles = draw_titles(target, max(len(tuning_titles) // 4, 1), settings.seed + 1)
    tune = TuneSettings(
        train_samples=None,
        valid_samples=None,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        micro_batch_size=settings.micro_batch_size,
        learning_rate=settings.learning_rate,
        weight_decay=0.0,
        warmup_ratio=0.0,
        patience=settings.epochs,  # never stop early: every method gets the same budget
        seed=settings.seed,
    )
    # History-free prompt: no SASRec score p_ui, so the process reward is the plain one, log R_p.
    # Above 1, sample_temperature explores: SubTB holds for any sampler with full support, and log pi
    # in the loss stays at temperature 1.
    temperature = settings.sample_temperature
    flower = FlowerSettings(lambda_=settings.lambda_, reward="plain", sample_temperature=temperature)
    objective = FlowerObjective(trie=trie, reward="plain", sample_temperature=temperature, granularity=1)
    with tempfile.TemporaryDirectory(prefix=".checkpoints.", dir=Path(log_csv).parent) as ckpt:
        paths = TrainPaths(checkpoints=Path(ckpt), log_csv=Path(log_csv), loss_png=Path(loss_png))
        train(
            model,
            "bigrec" if method == "sft" else "flower",
            tune_data(tuning_titles, trie, prompt),
            tune_data(valid_titles, trie, prompt),
            tune,
            paths,
            pad_id,
            flower=flower if method == "flower" else None,
            objective=objective if method == "flower" else None,
        )


# ------------------------------------------------------------------------------------------------
# Generation and evaluation
# ------------------------------------------------------------------------------------------------


def generate_titles(
    model, trie: Trie, prompt: Sequence[int], n: int, pad_id: int, seed: int, batch_size: int = 64
) -> list[str]:
    """`n` titles sampled at temperature 1 under the trie from the history-free prompt (seeded)."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    ids = sample_titles(
        model, trie, [list(prompt)] * n, pad_id, temperature=1.0, batch_size=batch_size, generator=generator
    )
    model.train(was_training)
    return [trie.titles[i] for i in ids.tolist()]


def write_title_probs(trie: Trie, log_probs: np.ndarray, path: str | Path) -> None:
    """probs/{method}.parquet: `title` string, `log_prob` float64: log P(title) under the model's
    trie-constrained policy at temperature 1 (flowrec.sampling.title_log_probs), every target title."""
    write_parquet(
        pa.table(
            {"title": pa.array(trie.titles, pa.string()), "log_prob": pa.array(log_probs, pa.float64())}
        ),
        path,
    )


def read_title_probs(path: str | Path) -> dict[str, float]:
    frame = pd.read_parquet(path)
    return dict(zip(frame["title"], np.exp(frame["log_prob"].to_numpy()), strict=True))


def write_samples(titles: Sequence[str], path: str | Path) -> None:
    """samples/{method}.parquet and tuning_set.parquet: `sample` int64, `title` string (docs/formats.md)."""
    table = pa.table(
        {"sample": pa.array(np.arange(len(titles)), pa.int64()), "title": pa.array(list(titles), pa.string())}
    )
    write_parquet(table, path)


def read_samples(path: str | Path) -> list[str]:
    return pd.read_parquet(path, columns=["title"])["title"].tolist()


def read_target(path: str | Path) -> dict[str, float]:
    """target.json as written by the distfit_target rule (already checked), in its order."""
    return {str(t): float(c) for t, c in json.loads(Path(path).read_text(encoding="utf-8")).items()}


def divergence_table(
    target: Mapping[str, float],
    samples: Mapping[str, Sequence[str]],
    trie: Trie,
    title_probs: Mapping[str, Mapping[str, float]] | None = None,
) -> pd.DataFrame:
    """One row per method (in `samples` order): title- and token-level KL(T||R), KL(R||T), JS.

    Token level: every title counts with its full trie path (title, newline, EOS), the ids the model
    generates. Smoothing and log base: flowrec.metrics.distribution_divergences (natural log).
    `title_probs[method]` ({title: P}, flowrec.sampling.title_log_probs) adds `title_JS_exact`: JS between T and
    the model's exact constrained distribution over titles, free of the sampling noise of R.
    """
    token_ids = {t: trie.title_token_ids(i) for i, t in enumerate(trie.titles)}
    title_probs = title_probs or {}
    rows = {}
    for method, titles in samples.items():
        unknown = sorted({t for t in titles if t not in token_ids})
        if unknown:
            raise ValueError(
                f"samples of {method!r}: {len(unknown)} titles outside the target set, e.g. {unknown[:3]}"
            )
        div = distribution_divergences(target, list(titles), token_ids)
        exact = title_probs.get(method)
        div["title_JS_exact"] = js_divergence(*aligned_counts(target, exact)) if exact else math.nan
        div["distinct"] = float(len(set(titles)))
        rows[LABELS.get(method, method)] = div
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "Method"
    columns = [f"{lvl}_{m}" for lvl in ("title", "token") for m in ("KL_TR", "KL_RT", "JS")]
    return table[[*columns, "title_JS_exact", "distinct", "generated"]]


def frequency_matrix(target: Mapping[str, float], samples: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """Share of each target title (rows, sorted by target count) in T and in each method's samples."""
    order = list(sort_target(target))
    total = sum(target.values())
    out = {"target": [target[t] / total for t in order]}
    for method, titles in samples.items():
        counts = pd.Series(list(titles), dtype=str).value_counts()
        out[method] = [counts.get(t, 0) / max(len(titles), 1) for t in order]
    return pd.DataFrame(out, index=pd.Index(order, name="title"))


def plot_fit(freq: pd.DataFrame, path: str | Path, title: str = "") -> None:
    """The paper's Figure 4: per method, target vs generated share over titles sorted by target share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flowrec.io import atomic_path

    methods = [c for c in freq.columns if c != "target"]
    ncols = min(3, len(methods))
    nrows = math.ceil(len(methods) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), sharex=True, sharey=True)
    axes = np.atleast_1d(axes).ravel()
    x = np.arange(1, len(freq) + 1)
    for ax, method in zip(axes, methods, strict=False):
        ax.bar(x, freq["target"], width=1.0, color="0.75", label="target T")
        ax.plot(x, freq[method], "o-", ms=2.5, lw=1, color="C3", label="generated R")
        ax.set_title(LABELS.get(method, method), fontsize=10)
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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)

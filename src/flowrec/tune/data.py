"""Training tensors of one split, built once before training: no file is read inside a step.

Per sample: prompt ids (flowrec.prompts), target ids (the target title's path in the trie, so training
targets and trie paths are the same ids), a loss weight (1, or IFairLRS's group weight), for Flower and
PPO the normalised SASRec score of every title for that sample's history (p_ui, docs/method.md sections
4 and 10), and for the preference losses of RQ3 the rejected titles (flowrec.tune.preferences).
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from flowrec.lm import left_pad, right_pad
from flowrec.prompts import prompt_ids_batch
from flowrec.titles import title_scores
from flowrec.trie import Trie
from flowrec.tune.losses import ifairlrs_weights, minmax_p_ui, normalise_p_ui

# How the SASRec scores of a sample's row are normalised before they reach a loss: Flower's rewards
# (docs/method.md section 4) or PPO's (per-row min-max, section 10).
P_UI_NORMALISATIONS = {"mean": normalise_p_ui, "minmax": minmax_p_ui}


@dataclass
class Batch:
    """A micro batch on the model's device: prompts left-padded, targets right-padded."""

    prompt_ids: torch.Tensor  # (B, P)
    prompt_mask: torch.Tensor  # (B, P)
    target_ids: torch.Tensor  # (B, T)
    target_mask: torch.Tensor  # (B, T)
    weights: torch.Tensor  # (B,)
    p_ui: torch.Tensor | None  # (B, n_titles) normalised SASRec scores per title
    rejected_ids: torch.Tensor | None = None  # (B * K, R) rejected titles' tokens, sample-major
    rejected_mask: torch.Tensor | None = None  # (B * K, R)


@dataclass
class TuneData:
    """Pre-tokenised samples (rows `rows` of a split, in that order)."""

    rows: np.ndarray
    prompts: list[torch.Tensor]
    targets: list[torch.Tensor]
    weights: torch.Tensor  # (n,) float32
    target_titles: torch.Tensor  # (n,) title id of each target
    p_ui: torch.Tensor | None = None  # (n, n_titles) float16
    rejected_titles: torch.Tensor | None = None  # (n, K) title ids of each sample's rejected titles
    title_paths: list[torch.Tensor] | None = None  # title id -> its token path (with rejected_titles)

    def __len__(self) -> int:
        return len(self.rows)

    def prompt_lengths(self, index: np.ndarray) -> np.ndarray:
        """Prompt length in tokens of samples `index`."""
        return np.array([len(self.prompts[i]) for i in index], dtype=np.int64)

    def digest(self) -> str:
        """A content hash of the samples: a checkpoint only resumes on the data it was trained on."""
        h = hashlib.sha256(np.ascontiguousarray(self.rows).tobytes())
        for tensor in (*self.prompts, *self.targets, self.weights, self.target_titles):
            h.update(tensor.numpy().tobytes())
        for extra in (self.p_ui, self.rejected_titles):
            if extra is not None:
                h.update(extra.numpy().tobytes())
        return h.hexdigest()

    def batch(self, index: np.ndarray | list[int], pad_id: int, device: torch.device | str = "cpu") -> Batch:
        """Collate samples `index` (positions in this object, not split rows) into a Batch on `device`."""
        prompt, prompt_mask = left_pad([self.prompts[i] for i in index], pad_id)
        target, target_mask = right_pad([self.targets[i] for i in index], pad_id)
        idx = torch.as_tensor(np.asarray(index), dtype=torch.long)
        p_ui = self.p_ui[idx].to(device) if self.p_ui is not None else None
        rejected = rejected_mask = None
        if self.rejected_titles is not None:
            rejected, rejected_mask = right_pad(
                [self.title_paths[t] for t in self.rejected_titles[idx].reshape(-1).tolist()], pad_id
            )
            rejected, rejected_mask = rejected.to(device), rejected_mask.to(device)
        return Batch(
            prompt.to(device),
            prompt_mask.to(device),
            target.to(device),
            target_mask.to(device),
            self.weights[idx].to(device),
            p_ui,
            rejected,
            rejected_mask,
        )


def load_p_ui(
    path: str | Path,
    rows: np.ndarray,
    item_title: np.ndarray,
    n_titles: int,
    chunk: int = 4096,
    normalisation: str = "mean",
) -> torch.Tensor:
    """Normalised p_ui per title for split rows `rows`, read once from the float16 memmap (formats.md);
    `normalisation` is a key of P_UI_NORMALISATIONS, applied per row over all items."""
    normalise = P_UI_NORMALISATIONS[normalisation]
    p = np.load(path, mmap_mode="r")
    if p.ndim != 2 or p.shape[1] != len(item_title):
        raise ValueError(f"{path}: expected shape (n_samples, {len(item_title)}), got {p.shape}")
    if len(rows) and rows.max() >= p.shape[0]:
        raise ValueError(f"{path}: has {p.shape[0]} rows, but sample {rows.max()} is needed")
    parts = []
    for start in range(0, len(rows), chunk):
        block = torch.from_numpy(np.asarray(p[rows[start : start + chunk]], dtype=np.float32))
        parts.append(title_scores(normalise(block), item_title, n_titles, reduce="max").numpy())
    return torch.from_numpy(np.concatenate(parts) if parts else np.zeros((0, n_titles), np.float32)).half()


def group_weights(train: pd.DataFrame, trie: Trie, groups: pd.DataFrame, shares: list[float]) -> np.ndarray:
    """IFairLRS weight of every train sample (docs/method.md section 5) from groups.parquet and groups.json shares.

    The target share of a group is counted over all train targets (the whole split, not the subset).
    """
    group_of_title = np.full(len(trie.titles), len(shares) - 1, dtype=np.int64)
    group_of_title[groups["title_id"].to_numpy()] = groups["group"].to_numpy()
    target_groups = group_of_title[np.asarray(trie.item_title)[train["target"].to_numpy()]]
    return ifairlrs_weights(target_groups, np.asarray(shares), len(shares))


def build_tune_data(
    split: pd.DataFrame,
    rows: np.ndarray,
    item_titles: list[str],
    tokenizer,
    trie: Trie,
    max_history: int,
    weights: np.ndarray | None = None,
    p_ui_path: str | Path | None = None,
    style: str = "full",
    p_ui_normalisation: str = "mean",
    rejected_titles: np.ndarray | None = None,
    noun: str = "items",
) -> TuneData:
    """Tokenise samples `rows` of a split once. `item_titles[item_id]` is the item's title; `weights` are
    per split row (all ones when None); `p_ui_path` the split's p_ui file (Flower, PPO) and
    `p_ui_normalisation` how its rows are normalised; `style` the prompt style (flowrec.prompts);
    `rejected_titles` (len(rows), K) the preference samples' rejected title ids (RQ3); `noun` the
    published style's item noun (prompt.item_noun)."""
    rows = np.asarray(rows, dtype=np.int64)
    sub = split.iloc[rows]
    item_title = np.asarray(trie.item_title)
    titles = item_title[sub["target"].to_numpy()]
    ptr, tokens = np.asarray(trie.title_ptr), np.asarray(trie.title_tokens)
    histories = [[item_titles[i] for i in hist] for hist in sub["history"]]
    prompts = [
        torch.tensor(p, dtype=torch.long)
        for p in prompt_ids_batch(tokenizer, histories, max_history, style, noun)
    ]
    targets = [torch.from_numpy(tokens[ptr[t] : ptr[t + 1]].astype(np.int64)) for t in titles]
    w = np.ones(len(rows), np.float32) if weights is None else np.asarray(weights, np.float32)[rows]
    p_ui = None
    if p_ui_path is not None:
        p_ui = load_p_ui(p_ui_path, rows, item_title, len(trie.titles), normalisation=p_ui_normalisation)
    paths = rejected = None
    if rejected_titles is not None:
        rejected = torch.from_numpy(np.asarray(rejected_titles, dtype=np.int64))
        if rejected.ndim != 2 or len(rejected) != len(rows):
            raise ValueError(
                f"rejected_titles: expected ({len(rows)}, K) title ids, got {tuple(rejected.shape)}"
            )
        paths = [
            torch.from_numpy(tokens[ptr[t] : ptr[t + 1]].astype(np.int64)) for t in range(len(trie.titles))
        ]
    return TuneData(
        rows,
        prompts,
        targets,
        torch.from_numpy(w),
        torch.from_numpy(titles.astype(np.int64)),
        p_ui,
        rejected,
        paths,
    )

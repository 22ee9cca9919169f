"""The two trl baselines of distribution fitting (RQ1): DPO and a reward-maximising RL method.

trl 1.16 no longer ships PPO (neither in `trl` nor in `trl.experimental`), so the RL row is GRPO
(Shao et al. 2024), trl's PPO-style policy-gradient trainer: clipped ratio objective, group-relative
advantages instead of a value model. Both run on the model's device (the process's: a GPU where the
rule has one, with bf16 autocast over fp32 weights as the pipeline's loop; else the CPU in fp32), log
their metrics into log.csv and the rule log (flowrec.distfit.trl_log), are seeded, and get the budget of the other methods: `train_samples` pairs (DPO)
or completions (GRPO), `batch_size` per step, the same learning rate and linear decay, same epochs.

Token ids are the pipeline's own (flowrec.prompts): DPO receives pre-tokenised prompt / chosen /
rejected ids (trl would otherwise re-tokenise prompt + title as text, which may merge tokens across the
boundary, docs/method.md section 8), and GRPO's sampler is constrained to the trie by a logits
processor, so every completion is a target title and its reward is defined.
"""

from __future__ import annotations

import copy
import logging
import math
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from flowrec.distfit.target import DistfitSettings
from flowrec.distfit.trl_log import PARTS, MetricsLog
from flowrec.settings import block_defaults
from flowrec.trie import Trie
from flowrec.tune.training_log import log_columns, plot_log, write_log

log = logging.getLogger(__name__)


def dpo_pairs(target: Mapping[str, float], n: int, seed: int) -> tuple[list[str], list[str]]:
    """`n` (chosen, rejected) title pairs as in the paper's RQ1: chosen uniformly among the target titles,
    rejected uniformly among the strictly less frequent ones (the least frequent titles, having none
    below, are never chosen). The counts enter only through the order of the pair."""
    titles = list(target)
    counts = np.fromiter(target.values(), np.float64, len(titles))
    has_lower = np.array([(counts < c).any() for c in counts])
    if not has_lower.any():
        raise ValueError("DPO pairs: every target title has the same count, so no title is less frequent")
    p = has_lower.astype(np.float64)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(titles), size=n, p=p / p.sum())
    # Uniform over {j : count_j < count_chosen}: a random rank below the number of such titles, read
    # off the titles sorted by count (ascending), so that all pairs are drawn at once.
    ascending = np.argsort(counts, kind="stable")
    n_lower = np.searchsorted(counts[ascending], counts[chosen], side="left")
    rejected = ascending[(rng.random(n) * n_lower).astype(np.int64)]
    return [titles[i] for i in chosen], [titles[i] for i in rejected]


def _dequantised_for_trainer(model) -> None:
    """A GGUF model is dequantised on load (flowrec.model drops its quantizer) but keeps the instance
    flag `is_quantized`, which makes transformers' Trainer refuse full fine-tuning; its weights are plain
    fp32 tensors, so clear the flag when no quantizer is left."""
    if getattr(model, "is_quantized", False) and getattr(model, "hf_quantizer", None) is None:
        model.is_quantized = False


def _common_args(settings: DistfitSettings, out_dir: str, device: torch.device) -> dict:
    cuda = device.type == "cuda"
    return dict(
        output_dir=out_dir,
        per_device_train_batch_size=settings.micro_batch_size,
        gradient_accumulation_steps=settings.batch_size // settings.micro_batch_size,
        num_train_epochs=settings.epochs,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        use_cpu=not cuda,
        # trl's defaults differ from TrainingArguments: bf16 autocast and gradient checkpointing on. bf16
        # autocast (over the fp32 weights) on CUDA only, as the pipeline's loop does with
        # tune.precision auto, fp32 on the CPU; activations are not recomputed.
        bf16=cuda,
        fp16=False,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        seed=settings.seed,
        data_seed=settings.seed,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )


def _metrics_log(settings: DistfitSettings, n_samples: int) -> MetricsLog:
    steps = math.ceil(n_samples / settings.batch_size)
    return MetricsLog(
        steps, steps * settings.epochs, settings.batch_size, block_defaults("tune")["log_steps"]
    )


def train_dpo(
    model,
    tokenizer,
    trie: Trie,
    prompt: Sequence[int],
    target: Mapping[str, float],
    settings: DistfitSettings,
) -> list[dict]:
    """DPO (Rafailov et al. 2023) on `train_samples` pairs; the frozen reference is the base model."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    class IdsDPOTrainer(DPOTrainer):
        """DPOTrainer fed the pipeline's ids: the dataset already has prompt_ids/chosen_ids/rejected_ids,
        so trl's text tokenisation (_prepare_dataset) is skipped."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    chosen, rejected = dpo_pairs(target, settings.train_samples, settings.seed)
    path = {t: trie.title_token_ids(i) for i, t in enumerate(trie.titles)}
    data = Dataset.from_dict(
        {
            "prompt_ids": [list(prompt)] * len(chosen),
            "chosen_ids": [path[t] for t in chosen],
            "rejected_ids": [path[t] for t in rejected],
        }
    )
    # A LoRA model is its own reference (adapters disabled); a full model needs a frozen copy.
    _dequantised_for_trainer(model)
    ref = None if hasattr(model, "peft_config") else copy.deepcopy(model).eval()
    with tempfile.TemporaryDirectory(prefix="flowrec-dpo-") as tmp:
        device = next(model.parameters()).device
        args = DPOConfig(**_common_args(settings, tmp, device), beta=settings.dpo_beta, max_length=None)
        metrics = _metrics_log(settings, len(chosen))
        trainer = IdsDPOTrainer(
            model=model,
            ref_model=ref,
            args=args,
            train_dataset=data,
            processing_class=tokenizer,
            callbacks=[metrics],
        )
        trainer.train()
    return metrics.rows


class TrieLogitsProcessor(LogitsProcessor):
    """Restricts `generate` to trie paths after a fixed-length prompt (every row the same prompt).

    The node of each row is tracked incrementally (one trie step per generated token, vectorised over
    the batch) and rebuilt from the completion when a new generation starts. Rows that finished a title
    (or left the trie) may emit only EOS, which `generate` replaces by padding.
    """

    def __init__(self, trie: Trie, prompt_len: int, eos_id: int):
        self.trie, self.prompt_len, self.eos_id = trie, prompt_len, eos_id
        self._nodes: torch.Tensor | None = None
        self._length = -1

    def _walk(self, input_ids: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        if self._nodes is not None and length == self._length + 1 and len(self._nodes) == len(input_ids):
            return self.trie.step(self._nodes, input_ids[:, -1])
        nodes = torch.zeros(len(input_ids), dtype=torch.long, device=input_ids.device)  # the root
        for t in range(self.prompt_len, length):
            nodes = self.trie.step(nodes, input_ids[:, t])
        return nodes

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] < self.prompt_len:
            raise ValueError(f"generation input of {input_ids.shape[1]} tokens is shorter than the prompt")
        self._nodes, self._length = self._walk(input_ids), input_ids.shape[1]
        allowed = self.trie.allowed_mask(self._nodes, scores.shape[-1])  # (B, V)
        stuck = ~allowed.any(-1)
        allowed[stuck, self.eos_id] = True
        return scores.masked_fill(~allowed, float("-inf"))


@contextmanager
def constrained_generate(model, processor: LogitsProcessor):
    """Make `model.generate` apply `processor` (trl's GRPOTrainer calls generate without a hook for
    logits processors); the instance attribute shadows the class method and is removed afterwards."""
    model.generate = partial(model.generate, logits_processor=LogitsProcessorList([processor]))
    try:
        yield model
    finally:
        del model.generate


def train_grpo(
    model,
    tokenizer,
    trie: Trie,
    prompt: Sequence[int],
    target: Mapping[str, float],
    settings: DistfitSettings,
) -> list[dict]:
    """GRPO with reward T(title) = count / total count of the generated title (0 for a non-title, which
    the trie constraint rules out), `rl_generations` completions per prompt, `train_samples` in all."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    if settings.batch_size % settings.rl_generations:
        raise ValueError(
            f"distfit.batch_size ({settings.batch_size}) must be a multiple of distfit.rl_generations "
            f"({settings.rl_generations}): each step holds whole groups of completions"
        )
    text = tokenizer.decode(list(prompt))
    if tokenizer(text)["input_ids"] != list(prompt):
        # GRPOTrainer tokenises the prompt text itself; it must give the pipeline's prompt ids.
        raise ValueError("the history-free prompt does not round-trip through the tokenizer as text")
    total = float(sum(target.values()))
    reward_of_path = {tuple(trie.title_token_ids(i)): target[t] / total for i, t in enumerate(trie.titles)}

    def title_share(prompts, completions, completion_ids, **_) -> list[float]:
        return [reward_of_path.get(tuple(ids), 0.0) for ids in completion_ids]

    _dequantised_for_trainer(model)
    n_prompts = math.ceil(settings.train_samples / settings.rl_generations)
    data = Dataset.from_dict({"prompt": [text] * n_prompts})
    processor = TrieLogitsProcessor(trie, len(prompt), tokenizer.eos_token_id)
    with tempfile.TemporaryDirectory(prefix="flowrec-grpo-") as tmp:
        args = GRPOConfig(
            **_common_args(settings, tmp, next(model.parameters()).device),
            num_generations=settings.rl_generations,
            max_completion_length=int(trie.depth.max()),
            temperature=1.0,
            shuffle_dataset=True,
        )
        metrics = _metrics_log(settings, n_prompts * settings.rl_generations)
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=title_share,
            args=args,
            train_dataset=data,
            processing_class=tokenizer,
            callbacks=[metrics],
        )
        with constrained_generate(trainer.accelerator.unwrap_model(trainer.model), processor):
            trainer.train()
    return metrics.rows


def write_training_log(rows: list[dict], log_csv: str | Path, loss_png: str | Path, title: str) -> None:
    """log.csv and loss.png as the pipeline's training loop writes them (flowrec.tune.training_log: the
    curves of flowrec.report.plot_training_curves); the SFT and SubTB columns stay empty for trl, and
    trl's own metrics follow the standard columns."""
    standard = log_columns(PARTS)
    extra = list(dict.fromkeys(k for row in rows for k in row if k not in standard))
    columns = log_columns(PARTS, extra)
    write_log(rows, log_csv, columns)
    plot_log(rows, loss_png, columns, title)

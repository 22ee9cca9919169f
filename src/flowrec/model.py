"""Base-LLM loading, LoRA, saving and loading tuned models.

Every tuned method, the decoder and the trie load the model and tokenizer through this module, so they
all see the same tokenizer (same pad token, left padding) and the same weights. Which files a
`model.name_or_path` names, and the on-disk cache of GGUF conversions, is flowrec.model_source.

Tuned models (`save_tuned` / `load_tuned`): full fine-tuning saves the full model; LoRA saves only the
adapter (small, and the training model stays a trainable peft model) and `flowrec_model.json` names the
base, which `load_tuned` loads again and merges the adapter into for fast inference.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from flowrec.model_source import EMBEDDED, EMBEDDED_PACKAGE, TINY_RANDOM, load_pretrained

MODEL_INFO = "flowrec_model.json"


@dataclass
class LoraSettings:
    """LoRA adapter settings (Hu et al. 2022) applied with peft when `model.lora` is true."""

    r: int
    alpha: int
    dropout: float
    # "all-linear": every linear layer of the transformer blocks (peft excludes the output head)
    target_modules: str | list[str] = "all-linear"
    # Blocks that get adapters (None: all); model.freeze_layers leaves the lowest ones without
    layers: list[int] | None = None


@dataclass
class ModelSettings:
    """The `model:` config block; build it with flowrec.settings.settings_from_block(.., "model")
    (config/schema.yaml holds the defaults and the help text)."""

    name_or_path: str
    lora: bool
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    freeze_layers: int

    def lora_settings(self) -> LoraSettings | None:
        """LoraSettings when LoRA is on, else None (full fine-tuning). The blocks that get adapters are
        resolved against the model by `load_base_model` (freeze_layers)."""
        return LoraSettings(self.lora_r, self.lora_alpha, self.lora_dropout) if self.lora else None


@dataclass(frozen=True)
class TinyRandomSpec:
    """Shape of the `tiny-random` Llama: small enough for unit tests on a CPU in milliseconds."""

    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 128
    max_position_embeddings: int = 2048


def _prepare_tokenizer(tokenizer):
    """Left padding (generation and batched prompts end at the same column) and a pad token."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


@functools.lru_cache(maxsize=8)
def _cached_tokenizer(name_or_path: str):
    return _prepare_tokenizer(load_pretrained(AutoTokenizer, name_or_path, "tokenizer"))


def load_tokenizer(name_or_path: str):
    """The tokenizer of `name_or_path`, pad token set, padding_side "left".

    Loading from a GGUF file takes seconds, so it is cached per process (the same object is returned to
    every caller; do not mutate it) and on disk (see flowrec.model_source.load_pretrained).
    """
    name = str(name_or_path)
    return _cached_tokenizer(EMBEDDED if name in (TINY_RANDOM, EMBEDDED_PACKAGE) else name)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """fp32 on CPU (bf16 matmuls are slow there), bf16 on CUDA."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def tiny_random_model(tokenizer=None, seed: int = 0, spec: TinyRandomSpec | None = None) -> LlamaForCausalLM:
    """A tiny randomly initialised Llama whose vocabulary is the SmolLM2 tokenizer's (same seed: same weights)."""
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(TINY_RANDOM)
    spec = spec or TinyRandomSpec()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        intermediate_size=spec.intermediate_size,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model


def apply_lora(model: PreTrainedModel, lora: LoraSettings):
    """Wrap `model` with trainable LoRA adapters (the base weights are frozen)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        layers_to_transform=lora.layers,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def trained_blocks(model: PreTrainedModel, freeze_layers: int) -> list[int]:
    """Indices of the transformer blocks above the lowest `freeze_layers` (model.freeze_layers)."""
    n_layers = int(model.config.num_hidden_layers)
    if not 0 <= freeze_layers < n_layers:
        raise ValueError(
            f"model.freeze_layers: {freeze_layers}; the model has {n_layers} transformer blocks, "
            f"so it must be in 0..{n_layers - 1}"
        )
    return list(range(freeze_layers, n_layers))


def freeze_lower_blocks(model: PreTrainedModel, freeze_layers: int) -> None:
    """Full fine-tuning with the token embeddings and the lowest `freeze_layers` blocks fixed.

    Nothing below the first trained block then needs a gradient, so autograd keeps no activations there
    and the backward pass stops at it. The embeddings go with the frozen part (with tied weights, as in
    SmolLM2, the output head is the same matrix and is frozen too, as LoRA leaves it).
    """
    trained_blocks(model, freeze_layers)  # checks the range
    if freeze_layers == 0:
        return
    model.get_input_embeddings().weight.requires_grad_(False)
    for block in model.model.layers[:freeze_layers]:
        block.requires_grad_(False)


def load_base_model(
    name_or_path: str,
    lora: LoraSettings | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    freeze_layers: int = 0,
):
    """The base causal LM of `name_or_path` on `device` (default: CUDA if available, else CPU).

    dtype defaults to fp32 on CPU and bf16 on CUDA; with `lora`, a peft model with trainable adapters.
    `freeze_layers` (model.freeze_layers): the lowest blocks get no adapters (LoRA) or stay fixed with the
    embeddings (full fine-tuning).
    `tiny-random` is always built with seed 0, so the name alone identifies its weights (load_tuned
    rebuilds the same base under a LoRA adapter). Returned in train mode (as from_pretrained does not); callers
    switch with .eval() for inference.
    """
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    if name_or_path == TINY_RANDOM:
        model = tiny_random_model(seed=0)
    else:
        model = load_pretrained(AutoModelForCausalLM, name_or_path, "model", dtype=torch.float32)
    model = model.to(device=device, dtype=dtype)
    return prepare_for_training(model, lora, freeze_layers)


def prepare_for_training(model: PreTrainedModel, lora: LoraSettings | None, freeze_layers: int = 0):
    """`model` set up to train, in train mode: with `lora`, a peft model with adapters above the lowest
    `freeze_layers` blocks; else every weight above them trainable (they stay fixed with the embeddings).
    Used on the base model and on the tuned model an aligned method starts from."""
    if lora is not None:
        if freeze_layers:
            # peft takes a block list only with named modules: every linear layer of a block, as all-linear
            linear = sorted(
                {
                    name.rsplit(".", 1)[-1]
                    for name, m in model.model.layers[0].named_modules()
                    if isinstance(m, torch.nn.Linear)
                }
            )
            lora = replace(lora, target_modules=linear, layers=trained_blocks(model, freeze_layers))
        model = apply_lora(model, lora)
    else:
        freeze_lower_blocks(model, freeze_layers)
    model.train()
    return model


def _is_peft(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "merge_and_unload")


def save_tuned(model, tokenizer, out_dir: str | Path, base_name_or_path: str, merge: bool = False) -> None:
    """Write a tuned model atomically to `out_dir`: save_pretrained output, tokenizer, flowrec_model.json.

    LoRA (peft) models save only the adapter; `flowrec_model.json` records the base so that `load_tuned`
    can rebuild it. Full models save all weights (safetensors); so does a LoRA model with `merge` (its
    adapter merged first: an aligned model's adapter sits on a tuned model, not on the base).
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if merge and _is_peft(model):
        model = model.merge_and_unload()
    lora = _is_peft(model)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".part", dir=out_dir.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp creates 0700; outputs are read by other users and jobs (as io.atomic_path)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        info = {"base": str(base_name_or_path), "lora": lora, "format": "adapter" if lora else "full"}
        (tmp / MODEL_INFO).write_text(json.dumps(info, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def load_tuned(
    path: str | Path,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    merge: bool = True,
):
    """(model, tokenizer) saved by `save_tuned`, in eval mode on `device` (default as load_base_model).

    LoRA adapters are loaded onto their base and, with `merge`, merged into it (plain model, faster).
    """
    path = Path(path)
    info_path = path / MODEL_INFO
    if not info_path.is_file():
        raise FileNotFoundError(
            f"{info_path}: missing; {path} is not a model written by flowrec.model.save_tuned"
        )
    info = json.loads(info_path.read_text())
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    if info.get("lora"):
        from peft import PeftModel

        base = load_base_model(info["base"], None, device=device, dtype=dtype)
        model = PeftModel.from_pretrained(base, str(path))
        if merge:
            model = model.merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).to(device)
    tokenizer = _prepare_tokenizer(AutoTokenizer.from_pretrained(str(path)))
    model.eval()
    return model, tokenizer


def describe(model) -> dict:
    """Parameter counts (all / trainable), for logs."""
    n_all = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"parameters": n_all, "trainable": n_train}

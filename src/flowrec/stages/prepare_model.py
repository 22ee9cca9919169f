"""Stage prepare_model: the base model as a save_pretrained folder with its tokenizer (results/models/<name>/).

Sources that need a conversion (flowrec.model_source.converted_name): the embedded SmolLM2 and any .gguf
file are dequantised to fp32 (transformers' GGUF loader, as the on-disk cache of flowrec.model_source
does, without reading or writing that cache); `tiny-random` is built from its seed with the SmolLM2
tokenizer. Every other rule loads this folder, so Snakemake sees, reruns and cleans the conversion.
"""

import copy
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from flowrec.cli import Param, Stage
from flowrec.model import _prepare_tokenizer, describe, tiny_random_model
from flowrec.model_source import EMBEDDED, TINY_RANDOM, load_pretrained

log = logging.getLogger(__name__)
SOURCE_INFO = "flowrec_source.json"


def convert(name_or_path: str):
    """(model, tokenizer) of a source, fp32, as the rest of the pipeline would load it from the source."""
    tokenizer = load_pretrained(
        AutoTokenizer, EMBEDDED if name_or_path == TINY_RANDOM else name_or_path, "tokenizer", cache=False
    )
    if name_or_path == TINY_RANDOM:
        # built with the tokenizer as flowrec.model.load_tokenizer prepares it (its pad id enters the config)
        model = tiny_random_model(_prepare_tokenizer(copy.deepcopy(tokenizer)), seed=0)
    else:
        model = load_pretrained(AutoModelForCausalLM, name_or_path, "model", cache=False, dtype=torch.float32)
    return model, tokenizer


def prepare_model(model_dir: str, name_or_path: str) -> None:
    """Convert `name_or_path` and write it to `model_dir` atomically (complete or absent)."""
    start = time.perf_counter()
    model, tokenizer = convert(name_or_path)
    log.info("model %s: %s, converted in %.1f s", name_or_path, describe(model), time.perf_counter() - start)
    out = Path(model_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / SOURCE_INFO).write_text(json.dumps({"name_or_path": name_or_path}, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    log.info("wrote %s", out)


STAGE = Stage(
    run=prepare_model,
    doc=__doc__,
    outputs={"model_dir": "models/<name>/ (save_pretrained model and tokenizer)"},
    params={"name_or_path": Param("model.name_or_path of the source", block="model.name_or_path")},
)

if __name__ == "__main__":
    STAGE.main(globals().get("snakemake"))

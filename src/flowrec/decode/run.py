"""One decoding job end to end (load, beam-search the seeded test subset, write predictions), in one
process or under torchrun with one process per device.

Prompts are dealt out round-robin (rank r decodes subset positions r, r + N, ...); every prompt's beam
search is independent of the others, so N processes give the predictions of one. Rank 0 gathers the
ranked lists (all_gather_object) and writes the parquet file. `python -m flowrec.decode.run job.json`
is the torchrun target; `launch(job, nproc)` runs here when nproc is 1.
"""

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist

from flowrec.decode.beams import Ranked
from flowrec.decode.d3 import title_masses
from flowrec.decode.predictions import predictions_table
from flowrec.decode.search import constrained_beam_search
from flowrec.distributed import job_main, launch_job, process_device, world
from flowrec.io import read_items, write_parquet
from flowrec.model import load_tuned
from flowrec.prompts import prompt_ids_batch
from flowrec.settings import settings_from_block
from flowrec.subsets import seeded_subset
from flowrec.trie import Trie

log = logging.getLogger(__name__)

MODULE = "flowrec.decode.run"


@dataclass
class DecodeSettings:
    """How one method decodes: the `decode:` config block resolved per method by the decode rule.

    test_samples, seed, num_beams, num_return, batch_size are the block's keys of those names;
    temperature (Temp: decode.temp_temperature, else 1), length_normalise (false for D3) and
    assistant_weight (D3's g: decode.d3_weight for d3, 1 for d3_noassist; null: no assistant).
    The rule resolves every key, so there are no defaults here.
    """

    test_samples: int | None
    seed: int
    num_beams: int
    num_return: int
    batch_size: int
    temperature: float
    length_normalise: bool
    assistant_weight: float | None


@dataclass
class DecodeJob:
    """Everything the decode rule needs: input and output paths, the resolved decode settings."""

    model_dir: str  # flowrec.model.save_tuned folder
    trie: str  # trie.npz
    items: str  # items.parquet
    test: str  # test.parquet
    output: str  # predictions parquet
    decode: dict  # DecodeSettings fields
    max_history: int  # prompt.max_history
    prompt_style: str  # prompt.style
    item_noun: str  # prompt.item_noun (the published style's instruction)
    p_ui: str | None = None  # sasrec/p_ui_test.npy (D3's assistant only)
    device: str | None = None  # default: cuda:{LOCAL_RANK} when CUDA is available, else cpu


def run_decode(job: DecodeJob) -> dict:
    """Decode this process's share of the test subset; rank 0 writes all predictions. Returns a summary."""
    settings = settings_from_block(DecodeSettings, job.decode)
    rank, size = world()
    device = process_device(job.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    items = read_items(job.items, columns=["item_id", "title"])
    item_titles = items["title"].tolist()
    trie = Trie.load(job.trie)
    if trie.n_items != len(items):
        raise ValueError(f"{job.trie}: built for {trie.n_items} items, {job.items} has {len(items)}")
    test = pd.read_parquet(job.test, columns=["history"])
    samples = seeded_subset(len(test), settings.test_samples, settings.seed)
    mine = np.arange(rank, len(samples), size)

    model, tokenizer = load_tuned(job.model_dir, device=device)
    histories = test["history"].iloc[samples[mine]]
    prompts = prompt_ids_batch(
        tokenizer,
        [[item_titles[i] for i in h] for h in histories],
        job.max_history,
        job.prompt_style,
        job.item_noun,
    )
    assistant = None
    if settings.assistant_weight is not None:
        assistant = assistant_masses(job.p_ui, samples[mine], (len(test), len(items)), trie)

    start = time.perf_counter()
    ranked = constrained_beam_search(
        model,
        prompts,
        trie,
        num_beams=settings.num_beams,
        num_return=settings.num_return,
        batch_size=settings.batch_size,
        temperature=settings.temperature,
        length_normalise=settings.length_normalise,
        assistant_title_scores=assistant,
        assistant_weight=1.0 if settings.assistant_weight is None else settings.assistant_weight,
        pad_token_id=tokenizer.pad_token_id,
        progress=rank == 0,
    )
    elapsed = time.perf_counter() - start
    if size > 1:
        ranked = gather_round_robin(ranked, len(samples), size)
    if rank == 0:
        short = sum(len(r) < settings.num_return for r in ranked)
        if short:
            log.warning(
                "%d prompts got fewer than %d titles (the trie holds %d)",
                short,
                settings.num_return,
                trie.n_titles,
            )
        write_parquet(predictions_table(samples, ranked, trie), job.output)
    return {
        "prompts": len(samples),
        "seconds": elapsed,
        "mine": len(mine),
        "processes": size,
        "device": device,
    }


def assistant_masses(
    p_ui_path: str | None, rows: np.ndarray, shape: tuple[int, int], trie: Trie
) -> np.ndarray:
    """D3's per-title SASRec mass (len(rows), n_titles) of the given test rows of p_ui_test.npy."""
    if p_ui_path is None:
        raise ValueError(
            "decode: assistant_weight is set but no p_ui file was given (D3 needs SASRec's scores)"
        )
    p_ui = np.load(p_ui_path, mmap_mode="r")
    if p_ui.shape != shape:
        raise ValueError(f"{p_ui_path}: shape {p_ui.shape}, expected (test samples, items) = {shape}")
    return title_masses(p_ui[rows], trie.item_title, trie.n_titles)


def gather_round_robin(mine: list[Ranked], n_samples: int, size: int) -> list[Ranked]:
    """Every rank's ranked lists back in subset order (rank r decoded positions r, r + size, ...)."""
    shares: list[list[Ranked]] = [[] for _ in range(size)]
    dist.all_gather_object(shares, mine)
    ranked: list[Ranked] = [[] for _ in range(n_samples)]
    for r, share in enumerate(shares):
        for pos, row in zip(range(r, n_samples, size), share, strict=True):
            ranked[pos] = row
    return ranked


def log_summary(summary: dict) -> None:
    log.info(
        "decoded %d test prompts in %.1f s: %.3f s per prompt (%d process(es), device %s)",
        summary["prompts"],
        summary["seconds"],
        summary["seconds"] / max(summary["mine"], 1),
        summary["processes"],
        summary["device"],
    )


def launch(job: DecodeJob, nproc: int = 1) -> None:
    """Run `job` here (nproc 1) or as `nproc` torchrun processes on this machine."""
    spec = Path(job.output).with_name(f".{Path(job.output).stem}.decode_job.json")
    launch_job(job, run_decode, log_summary, MODULE, spec, nproc)


if __name__ == "__main__":  # the torchrun target
    job_main(sys.argv[1:], MODULE, DecodeJob, run_decode, log_summary)

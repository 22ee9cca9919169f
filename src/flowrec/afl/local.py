"""The local backend: a transformers causal LM answering the agents' prompts (docs/method.md section 9).

For a batch of requests: the chat prompt ends with "Reason:"; the reason is generated with the prompt's
KV cache (flowrec.lm), one token per step for the whole batch, up to `reason_tokens` or a newline.
Then prompt + reason + "\n<Field>:" is encoded again and the answer is decoded under a prefix tree
(flowrec.trie.Trie.build) over the options of the batch, each row restricted to its own options (a
node is allowed when one of the row's option titles lies in its title range), so every answer is one
of the request's options. Temperature 0: greedy; above 0: sampled with a seeded generator.
"""

from __future__ import annotations

import functools
import time

import torch

from flowrec.afl.agents import Reply, Request
from flowrec.afl.backends import BackendSettings, Stats
from flowrec.lm import encode_prompts, feed_tokens, left_pad
from flowrec.model import load_base_model, load_tokenizer
from flowrec.prompts import title_ids
from flowrec.sampling import allowed_ids
from flowrec.trie import Trie


class LocalBackend:
    def __init__(self, settings: BackendSettings, threads: int = 1, model=None, tokenizer=None):
        if threads:
            torch.set_num_threads(threads)
        self.settings = settings
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(settings.model)
        self.model = (model if model is not None else load_base_model(settings.model, device="cpu")).eval()
        self.device = next(self.model.parameters()).device
        self.pad_id = self.tokenizer.pad_token_id
        self.newline = set(self.tokenizer("\n", add_special_tokens=False)["input_ids"])
        self.identity = {
            "kind": "local",
            "model": settings.model,
            "temperature": settings.temperature,
            "seed": settings.seed,
            "reason_tokens": settings.reason_tokens,
        }
        self.stats = Stats()
        self.generator = torch.Generator().manual_seed(settings.seed)

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _prompt(self, request: Request) -> list[int]:
        messages = [{"role": "system", "content": request.system}, {"role": "user", "content": request.user}]
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self._ids(text) + self._ids("Reason:")

    def _pick(self, scores: torch.Tensor) -> torch.Tensor:
        """(B, K) scores (-inf where not allowed) -> (B,) column: argmax, or sampled above temperature 0."""
        if self.settings.temperature <= 0:
            return scores.argmax(-1)
        probs = torch.softmax(scores.float() / self.settings.temperature, -1)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(1)

    @torch.no_grad()
    def _reasons(self, prompts: list[list[int]]) -> list[list[int]]:
        ids, mask = left_pad(prompts, self.pad_id, self.device)
        cache, logits = encode_prompts(self.model, ids, mask)
        batch = len(prompts)
        done = torch.zeros(batch, dtype=torch.bool)
        stop = torch.tensor(sorted(self.newline | {self.tokenizer.eos_token_id}))
        out: list[list[int]] = [[] for _ in range(batch)]
        for _ in range(self.settings.reason_tokens):
            token = self._pick(logits.float())
            ended = torch.isin(token, stop)
            for row in torch.nonzero(~done & ~ended).flatten().tolist():
                out[row].append(int(token[row]))
            done |= ended
            if bool(done.all()):
                break
            result, mask = feed_tokens(self.model, cache, mask, token, active=~done, logits_to_keep=1)
            cache, logits = result.past_key_values, result.logits[:, -1]
        return out

    @torch.no_grad()
    def _choose(self, prompts: list[list[int]], options: list[tuple[str, ...]]) -> list[str]:
        union = sorted({o for opts in options for o in opts})
        # A leading space: the answer follows "Item:" as a word, as the model would write it.
        trie = Trie.build(union, functools.partial(_spaced_ids, self.tokenizer))
        index = trie.title_index
        width = max(len(o) for o in options)
        row_titles = torch.full((len(options), width), -1, dtype=torch.long)
        for row, opts in enumerate(options):
            row_titles[row, : len(opts)] = torch.tensor([index[o] for o in opts])
        ids, mask = left_pad(prompts, self.pad_id, self.device)
        cache, logits = encode_prompts(self.model, ids, mask)
        c = trie._on(torch.device("cpu"))
        nodes = torch.zeros(len(prompts), dtype=torch.long)
        finished = torch.zeros(len(prompts), dtype=torch.bool)
        for _ in range(int(trie.depth.max())):
            tokens, valid = allowed_ids(trie.allowed_mask(nodes, logits.shape[-1]))  # (B, K)
            child = trie.step(nodes[:, None].expand_as(tokens), tokens).clamp_min(0)
            start, end = c.leaf_start[child][..., None], c.leaf_end[child][..., None]  # (B, K, 1)
            mine = row_titles[:, None, :]  # (B, 1, W)
            valid &= ((mine >= start) & (mine < end) & (mine >= 0)).any(-1)
            scores = logits.float().gather(1, tokens).masked_fill(~valid, float("-inf"))
            scores[:, 0] = torch.where(finished, 0.0, scores[:, 0])  # finished rows: any column
            token = torch.where(
                finished, self.pad_id, tokens.gather(1, self._pick(scores)[:, None]).squeeze(1)
            )
            nodes = torch.where(finished, nodes, trie.step(nodes, token))
            finished |= trie.is_leaf(nodes)
            if bool(finished.all()):
                break
            result, mask = feed_tokens(self.model, cache, mask, token, active=~finished, logits_to_keep=1)
            cache, logits = result.past_key_values, result.logits[:, -1]
        if not bool(finished.all()):
            raise RuntimeError("constrained answer ran past the option trie's depth")
        return [trie.titles[t] for t in trie.title_of(nodes).tolist()]

    def __call__(self, requests: list[Request]) -> list[Reply]:
        start = time.perf_counter()
        replies: list[Reply] = []
        size = self.settings.batch_size
        for lo in range(0, len(requests), size):
            batch = requests[lo : lo + size]
            prompts = [self._prompt(r) for r in batch]
            reasons = self._reasons(prompts)
            second = [
                p + r + self._ids(f"\n{q.field}:") for p, r, q in zip(prompts, reasons, batch, strict=True)
            ]
            choices = self._choose(second, [q.options for q in batch])
            for request, prompt, reason, choice, answer in zip(
                batch, prompts, reasons, choices, second, strict=True
            ):
                text = self.tokenizer.decode(reason, skip_special_tokens=True).strip()
                replies.append(
                    Reply(
                        reason=text,
                        choice=choice,
                        parsed=True,
                        text=f"Reason: {text}\n{request.field}: {choice}",
                        prompt_tokens=len(prompt),
                        # the reason, the "<Field>:" turn and the decoded option
                        completion_tokens=len(answer)
                        - len(prompt)
                        + len(_spaced_ids(self.tokenizer, choice)),
                    )
                )
        self.stats.calls += len(requests)
        self.stats.prompt_tokens += sum(r.prompt_tokens for r in replies)
        self.stats.completion_tokens += sum(r.completion_tokens for r in replies)
        self.stats.seconds += time.perf_counter() - start
        return replies


def _spaced_ids(tokenizer, option: str) -> list[int]:
    return title_ids(tokenizer, " " + option)

"""Prompts and targets: the one place that turns histories and titles into token ids.

Training (SFT, IFairLRS, Flower), decoding and distribution fitting all call these functions, and the
trie is built from `title_ids`, so that a training target, a trie path and a decoded title are the same
ids by construction (docs/method.md section 8, last bullet: tokenizers may merge the prompt's last
characters with the title's first, e.g. SmolLM2 merges " \\n"; so prompt and title are tokenized apart
and concatenated at the id level, never as text).

Prompt: the tokenizer's chat template when it has one (SmolLM2 has), a system message with the task and
a user message listing the most recent `max_history` history titles, oldest first, then the assistant
turn opened (add_generation_prompt=True). Without a chat template a plain instruction/response text.

Three styles (`prompt.style`): `full`, the instruction above (~70 tokens before the first title with
SmolLM2's template), and `terse`, a one-line system message and the bare numbered titles (~30 tokens):
every token of the prompt is encoded in every training step and every decoded prompt, so on a CPU
budget the shorter prompt buys more tuning samples and test prompts (bench/learning_curve.py).
`published` is the Alpaca-style layout of the published code (Mr-Peach0301/Flower,
with_history/code/dataset.py), no chat template: a preamble with the instruction, then the input
listing the history titles on one line, then the response header (`published_prompt_texts`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SYSTEM = "You are a recommender system. Answer with the title of exactly one item and nothing else."
TASK = "Given the movies/items a user interacted with, oldest first, recommend the next item the user will interact with."
NO_HISTORY = "(no items yet)"
HISTORY_FREE_TASK = "Recommend an item."
TERSE_SYSTEM = "Recommend the next movie/item after these, oldest first. Answer with its title only."
STYLES = ("full", "terse", "published")
# The published prompt's text (with_history/code/dataset.py). Its spaces before newlines, "enjoy",
# "may bought" and the plural "{noun}s" of an already plural noun ("musicss") are as published.
PUBLISHED_PREAMBLE = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request. \n\n"
    "### Instruction:\n"
    "Given a list of {noun} the user recently enjoy, please write a new {noun} that the user may bought\n\n"
)
PUBLISHED_INPUT = (
    "### User Input: \nThe user has enjoyed the following {noun}s before: {titles}\n\n### Response: \n"
)
# Termination of every title (docs/method.md section 3): newline, then EOS, as in the reference code.
TITLE_END = "\n"


@dataclass
class PromptSettings:
    """The `prompt:` block; build it with flowrec.settings.settings_from_block(.., "prompt")."""

    max_history: int  # history titles shown (most recent)
    style: str  # full | terse | published
    item_noun: str  # the noun the published style's instruction names (e.g. "musics")


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"prompt.style: {style!r}; expected one of {STYLES}")


def history_text(history_titles: Sequence[str], max_history: int, style: str = "full") -> str:
    """The user message: the last `max_history` titles, oldest first, one per line (`full`: after the task).
    The `published` style has no user message (`published_prompt_texts`)."""
    _check_style(style)
    if style == "published":
        raise ValueError(
            "prompt.style published: its text comes from published_prompt_texts, not a user message"
        )
    recent = list(history_titles)[-max_history:] if max_history > 0 else []
    lines = "\n".join(f"{i}. {title}" for i, title in enumerate(recent, start=1)) if recent else NO_HISTORY
    return f"{TASK}\nItems (oldest first):\n{lines}" if style == "full" else lines


def published_prompt_texts(history_titles: Sequence[str], max_history: int, noun: str) -> tuple[str, str]:
    """(preamble, input) texts of the published prompt: the last `max_history` titles, oldest first,
    joined by ", ". The published code tokenizes the two apart (the preamble with BOS, when the
    tokenizer has one) and concatenates the ids; `prompt_ids` does the same."""
    recent = list(history_titles)[-max_history:] if max_history > 0 else []
    return PUBLISHED_PREAMBLE.format(noun=noun), PUBLISHED_INPUT.format(noun=noun, titles=", ".join(recent))


def _published_ids(tokenizer, texts: list[tuple[str, str]]) -> list[list[int]]:
    """Ids of (preamble, input) pairs: BOS (if any) + preamble ids, then input ids, encoded apart."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    preamble = _encode(tokenizer, sorted({p for p, _ in texts}))
    by_text = dict(zip(sorted({p for p, _ in texts}), preamble, strict=True))
    inputs = _encode(tokenizer, [i for _, i in texts])
    return [bos + by_text[p] + ids for (p, _), ids in zip(texts, inputs, strict=True)]


def _render(tokenizer, user: str, style: str = "full") -> str:
    """Prompt text ending where the answer starts (chat template, or an instruction/response fallback)."""
    system = SYSTEM if style == "full" else TERSE_SYSTEM
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    bos = tokenizer.bos_token or ""
    return f"{bos}### Instruction:\n{system}\n{user}\n### Response:\n"


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    # The rendered text already holds the special tokens of the template: add none.
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def prompt_ids(
    tokenizer, history_titles: Sequence[str], max_history: int, style: str = "full", noun: str = "items"
) -> list[int]:
    """Token ids of the prompt for one sample (docs/method.md section 1); the title's ids follow directly.
    `noun` enters the `published` style only (prompt.item_noun)."""
    return prompt_ids_batch(tokenizer, [history_titles], max_history, style, noun)[0]


def prompt_ids_batch(
    tokenizer, histories: Sequence[Sequence[str]], max_history: int, style: str = "full", noun: str = "items"
) -> list[list[int]]:
    """`prompt_ids` for many samples in one tokenizer call (pre-tokenise a split once, not per step)."""
    _check_style(style)
    if not histories:
        return []
    if style == "published":
        return _published_ids(tokenizer, [published_prompt_texts(h, max_history, noun) for h in histories])
    texts = [_render(tokenizer, history_text(h, max_history, style), style) for h in histories]
    return _encode(tokenizer, texts)


def history_free_prompt_ids(tokenizer) -> list[int]:
    """The prompt without history used for distribution fitting (docs/method.md section 6, RQ1)."""
    return _encode(tokenizer, [_render(tokenizer, HISTORY_FREE_TASK)])[0]


def title_ids(tokenizer, title: str) -> list[int]:
    """The ids generated for `title`: title + newline, then EOS (docs/method.md section 3's termination).

    EOS alone is a special token the model may emit after any prefix; the newline first makes the end
    of a title an ordinary text token, as the reference code does. These ids are both the SFT target and
    the title's path in the trie.
    """
    return list(tokenizer(title + TITLE_END, add_special_tokens=False)["input_ids"]) + [
        tokenizer.eos_token_id
    ]


def title_ids_batch(tokenizer, titles: Sequence[str]) -> list[list[int]]:
    """`title_ids` for many titles in one tokenizer call."""
    if not titles:
        return []
    encoded = tokenizer([t + TITLE_END for t in titles], add_special_tokens=False)["input_ids"]
    return [list(ids) + [tokenizer.eos_token_id] for ids in encoded]


def split_token_ids(
    tokenizer,
    histories: Sequence[Sequence[int]],
    targets: Sequence[int] | np.ndarray,
    item_titles: Sequence[str],
    max_history: int,
) -> tuple[list[list[int]], list[list[int]]]:
    """(prompt ids, target ids) for every sample of a split (rows of data/{split}.parquet, same order).

    `histories` are item-id lists, `targets` item ids, `item_titles[item_id]` the title. The ids of one
    sample's training sequence are prompt + target, its loss covers the target part only.
    """
    prompts = prompt_ids_batch(tokenizer, [[item_titles[i] for i in h] for h in histories], max_history)
    unique = sorted({int(t) for t in targets})
    encoded = dict(zip(unique, title_ids_batch(tokenizer, [item_titles[t] for t in unique]), strict=True))
    return prompts, [encoded[int(t)] for t in targets]


def sample_ids(prompt: Sequence[int], target: Sequence[int]) -> tuple[list[int], int]:
    """(input ids, prompt length): the id-level concatenation every trainer uses."""
    return [*prompt, *target], len(prompt)

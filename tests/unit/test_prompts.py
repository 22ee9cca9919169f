"""Prompts and targets: one construction for training and decoding, titles tokenized apart."""

from functools import partial

import numpy as np
import pytest

from flowrec.prompts import (
    HISTORY_FREE_TASK,
    SYSTEM,
    TASK,
    TERSE_SYSTEM,
    PromptSettings,
    history_free_prompt_ids,
    prompt_ids,
    prompt_ids_batch,
    sample_ids,
    split_token_ids,
    title_ids,
    title_ids_batch,
)
from flowrec.settings import settings_from_block

HISTORY = [f"Movie {i} (199{i % 10})" for i in range(14)]


def test_prompt_lists_recent_history_oldest_first_and_opens_the_answer(tokenizer) -> None:
    text = tokenizer.decode(prompt_ids(tokenizer, HISTORY, 10))
    listing = "\n".join(f"{i}. {t}" for i, t in enumerate(HISTORY[-10:], start=1))
    assert listing + "<|im_end|>" in text  # the 10 most recent, oldest first
    assert all(t not in text for t in HISTORY[:4])
    assert text.endswith("<|im_start|>assistant\n")  # chat template, generation prompt added
    assert "recommend the next item" in text
    no_history = tokenizer.decode(prompt_ids(tokenizer, HISTORY, 0))
    assert "Movie" not in no_history


def test_terse_style_lists_the_same_titles_in_fewer_tokens(tokenizer) -> None:
    full, terse = prompt_ids(tokenizer, HISTORY, 5), prompt_ids(tokenizer, HISTORY, 5, style="terse")
    text = tokenizer.decode(terse)
    listing = "\n".join(f"{i}. {t}" for i, t in enumerate(HISTORY[-5:], start=1))
    assert listing + "<|im_end|>" in text and "Movie 8" not in text
    assert text.endswith("<|im_start|>assistant\n") and "recommend the next item" not in text
    assert len(terse) < len(full) - 30
    assert prompt_ids_batch(tokenizer, [HISTORY], 5, "terse") == [terse]
    with pytest.raises(ValueError, match="prompt.style: 'short'"):
        prompt_ids(tokenizer, HISTORY, 5, style="short")


def test_batch_helpers_equal_single_calls(tokenizer) -> None:
    histories = [HISTORY[:3], [], HISTORY]
    assert prompt_ids_batch(tokenizer, histories, 10) == [prompt_ids(tokenizer, h, 10) for h in histories]
    titles = ["Heat (1995)", "Café Society", " leading space", "Back to the Future"]
    assert title_ids_batch(tokenizer, titles) == [title_ids(tokenizer, t) for t in titles]
    assert prompt_ids_batch(tokenizer, [], 10) == [] and title_ids_batch(tokenizer, []) == []


def test_title_ids_end_with_newline_then_eos(tokenizer) -> None:
    ids = title_ids(tokenizer, "Heat (1995)")
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids[:-1]) == "Heat (1995)\n"
    assert tokenizer.decode(ids[-2:-1]) == "\n"


def test_prompt_and_title_are_joined_at_the_id_level(tokenizer) -> None:
    prompt = prompt_ids(tokenizer, HISTORY[:2], 10)
    target = title_ids(tokenizer, "Heat (1995)")
    ids, n_prompt = sample_ids(prompt, target)
    assert ids[:n_prompt] == prompt and ids[n_prompt:] == target
    # the prompt is fixed: its last id is the same whatever title follows (no cross-boundary merges)
    assert prompt[-1] == tokenizer("\n", add_special_tokens=False).input_ids[0]


def test_history_free_prompt(tokenizer) -> None:
    text = tokenizer.decode(history_free_prompt_ids(tokenizer))
    assert HISTORY_FREE_TASK in text and "Items (oldest first)" not in text
    assert text.endswith("<|im_start|>assistant\n")


def test_split_token_ids_follow_row_order(tokenizer) -> None:
    item_titles = ["A (1990)", "B (1991)", "C (1992)"]
    histories = [np.array([0, 1]), np.array([], dtype=np.int64), np.array([2])]
    prompts, targets = split_token_ids(tokenizer, histories, np.array([2, 0, 2]), item_titles, 10)
    assert prompts == [prompt_ids(tokenizer, [item_titles[i] for i in h], 10) for h in histories]
    assert targets == [title_ids(tokenizer, item_titles[t]) for t in (2, 0, 2)]


class _PlainTokenizer:
    """A tokenizer without chat template: the fallback instruction/response prompt."""

    def __init__(self, inner) -> None:
        self.inner, self.chat_template, self.bos_token, self.eos_token_id = (
            inner,
            None,
            None,
            inner.eos_token_id,
        )

    def __call__(self, texts, add_special_tokens=False):
        return self.inner(texts, add_special_tokens=add_special_tokens)


def test_fallback_without_chat_template(tokenizer) -> None:
    plain = _PlainTokenizer(tokenizer)
    text = tokenizer.decode(prompt_ids(plain, HISTORY[:2], 10))
    assert text.endswith("### Response:\n") and "<|im_start|>" not in text
    assert title_ids(plain, "Heat (1995)") == title_ids(tokenizer, "Heat (1995)")


def test_published_style_is_the_published_alpaca_layout(tokenizer) -> None:
    """with_history/code/dataset.py: preamble + instruction, the input line with the titles joined by
    ", ", the response header; no chat template. The text below is written out from that file."""
    ids = prompt_ids(tokenizer, HISTORY, 3, style="published", noun="musics")
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    preamble = (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request. \n\n### Instruction:\n"
        "Given a list of musics the user recently enjoy, please write a new musics that the user may bought\n\n"
    )
    user_input = (
        "### User Input: \nThe user has enjoyed the following musicss before: "
        "Movie 11 (1991), Movie 12 (1992), Movie 13 (1993)\n\n### Response: \n"
    )
    # the two parts are tokenized apart and joined at the id level, as the published code does
    encode = partial(tokenizer, add_special_tokens=False)
    assert ids == bos + encode(preamble)["input_ids"] + encode(user_input)["input_ids"]
    # no chat template (the tokenizer's BOS, if it has one, opens the text as the published code adds it;
    # Qwen2.5 has none)
    assert tokenizer.decode(ids[len(bos) :]) == preamble + user_input and "assistant" not in tokenizer.decode(
        ids
    )
    # the target follows the response header: title + "\n", then EOS
    target = title_ids(tokenizer, "Heat (1995)")
    full, n_prompt = sample_ids(ids, target)
    assert tokenizer.decode(full[n_prompt:]) == "Heat (1995)\n" + tokenizer.eos_token
    assert tokenizer.decode(full).endswith("### Response: \nHeat (1995)\n" + tokenizer.eos_token)
    batch = prompt_ids_batch(tokenizer, [HISTORY, HISTORY[:1], []], 3, "published", "musics")
    assert (
        batch[0] == ids
        and len({tuple(b[: len(bos) + len(encode(preamble)["input_ids"])]) for b in batch}) == 1
    )
    assert tokenizer.decode(batch[1]).endswith("before: Movie 0 (1990)\n\n### Response: \n")


def test_full_and_terse_ids_are_the_chat_template_of_their_messages(tokenizer) -> None:
    """The styles that existed before `published` still encode exactly their chat-template text."""
    listing = "\n".join(f"{i}. {t}" for i, t in enumerate(HISTORY[-4:], start=1))
    for style, system, user in (
        ("full", SYSTEM, f"{TASK}\nItems (oldest first):\n{listing}"),
        ("terse", TERSE_SYSTEM, listing),
    ):
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        expected = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert prompt_ids(tokenizer, HISTORY, 4, style) == expected
        assert prompt_ids(tokenizer, HISTORY, 4, style, noun="musics") == expected  # the noun is published's


def test_item_noun_default_comes_from_the_schema() -> None:
    settings = settings_from_block(PromptSettings, {"style": "published"}, "prompt")
    assert (settings.style, settings.item_noun, settings.max_history) == ("published", "items", 10)

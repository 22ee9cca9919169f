"""AFL's two agents as prompts (docs/method.md section 9): templates, memory and answer parsing.

Recommendation agent: the user's history, the candidate list, the recommendation model's suggestion
and its memory of earlier rounds -> "Reason: ... Item: <one candidate>". User agent: the history, the
recommended item with the recommender's reason, the reward model's score and its memory ->
"Reason: ... Decision: yes|no". After a "no" both memories get the round (item, the recommender's
reason, the user's reason), each worded from its own side. Templates exist for movies (MovieLens) and
products (Amazon); `domain` picks one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

DOMAINS = {
    "movie": {"items": "movies", "item": "movie", "consumed": "watched"},
    "product": {"items": "products", "item": "product", "consumed": "bought"},
}
YES_NO = ("yes", "no")


@dataclass(frozen=True)
class Request:
    """One LLM call: chat messages and the answer field whose value must be one of `options`."""

    system: str
    user: str
    field: str  # "Item" or "Decision"
    options: tuple[str, ...]
    fallback: str  # the option taken when a free-text answer names none (counted as unparsed)


@dataclass(frozen=True)
class Reply:
    """The parsed answer: a reason and one of the request's options. `parsed` is False when the text
    named no option and `choice` is the caller's fallback (a local constrained backend always parses)."""

    reason: str
    choice: str
    parsed: bool
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class Round:
    """One rejected round, as both memories store it."""

    item: str
    rec_reason: str
    user_reason: str


def _words(domain: str) -> dict[str, str]:
    if domain not in DOMAINS:
        raise ValueError(f"afl.domain: expected one of {sorted(DOMAINS)}, got {domain!r}")
    return DOMAINS[domain]


def _history(titles: Sequence[str]) -> str:
    return "\n".join(f"{i}. {t}" for i, t in enumerate(titles, start=1)) or "(none)"


def rec_memory_text(rounds: Sequence[Round]) -> str:
    """The recommendation agent's memory: one line per rejected round."""
    return "\n".join(
        f"Round {i}: you recommended {r.item} because {r.rec_reason} The user rejected it: {r.user_reason}"
        for i, r in enumerate(rounds, start=1)
    )


def user_memory_text(rounds: Sequence[Round]) -> str:
    """The user agent's memory: one line per rejected round."""
    return "\n".join(
        f"Round {i}: you were recommended {r.item} (reason given: {r.rec_reason}) and said no because {r.user_reason}"
        for i, r in enumerate(rounds, start=1)
    )


def rec_request(
    domain: str,
    history: Sequence[str],
    candidates: Sequence[str],
    suggestion: str | None,
    memory: Sequence[Round],
) -> Request:
    """The recommendation agent's prompt; `suggestion` None leaves the recommendation model out."""
    w = _words(domain)
    system = (
        f"You are a {w['item']} recommendation agent. Pick the one {w['item']} from the candidate list "
        f"that the user is most likely to like next. Answer in exactly this format:\n"
        f"Reason: <one short sentence>\nItem: <one title copied from the candidate list>"
    )
    parts = [
        f"{w['items'].capitalize()} the user {w['consumed']}, oldest first:\n{_history(history)}",
        f"Candidates:\n{_history(candidates)}",
    ]
    if suggestion is not None:
        parts.append(f"A recommendation model trained on many users suggests: {suggestion}")
    if memory:
        parts.append(
            f"Earlier rounds (do not recommend a rejected {w['item']} again):\n{rec_memory_text(memory)}"
        )
    # An answer that names no candidate falls back to the recommendation model's suggestion.
    fallback = suggestion if suggestion in candidates else candidates[0]
    return Request(system, "\n\n".join(parts), field="Item", options=tuple(candidates), fallback=fallback)


def user_request(
    domain: str,
    history: Sequence[str],
    item: str,
    rec_reason: str | None,
    reward: float | None,
    memory: Sequence[Round],
) -> Request:
    """The user agent's prompt; `rec_reason` None (user simulation without the loop) and `reward` None
    (no reward model) leave those lines out. `reward` is the share of all items the reward model ranks
    below `item` for this user."""
    w = _words(domain)
    system = (
        f"You are a user of a {w['item']} platform with the taste shown by your history. Decide whether "
        f"you would like the recommended {w['item']}. Answer in exactly this format:\n"
        f"Reason: <one short sentence>\nDecision: <yes or no>"
    )
    parts = [
        f"{w['items'].capitalize()} you {w['consumed']}, oldest first:\n{_history(history)}",
        f"Recommended {w['item']}: {item}",
    ]
    if rec_reason is not None:
        parts.append(f"The recommender's reason: {rec_reason}")
    if reward is not None:
        parts.append(
            f"A reward model that knows your history ranks this {w['item']} above {100 * reward:.0f}% "
            f"of all {w['items']} for you."
        )
    if memory:
        parts.append(f"Earlier rounds:\n{user_memory_text(memory)}")
    # An answer without a decision counts as "no": the loop goes on rather than stopping on a guess.
    return Request(system, "\n\n".join(parts), field="Decision", options=YES_NO, fallback="no")


_REASON = re.compile(r"reason\s*:\s*(.*?)\s*(?:\n|$)", re.IGNORECASE)


def _norm(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", " ", text.lower()).strip()


def parse_answer(text: str, request: Request) -> tuple[str, str | None]:
    """(reason, chosen option or None) from a free-text answer.

    The field's value ("Item: ..." / "Decision: ...", last occurrence) must equal an option up to case
    and punctuation, or contain one (the longest contained option wins, so "Cape Fear (1991)" beats
    "Cape Fear"); a bare option on the last line counts too.
    """
    reason_match = _REASON.search(text)
    reason = reason_match.group(1).strip() if reason_match else ""
    values = re.findall(rf"{request.field}\s*:\s*(.+)", text, flags=re.IGNORECASE)
    value = values[-1] if values else (text.strip().splitlines() or [""])[-1]
    value = _norm(value)
    if not value:
        return reason, None
    by_norm = {_norm(o): o for o in request.options}
    if value in by_norm:
        return reason, by_norm[value]
    contained = [o for n, o in by_norm.items() if n and re.search(rf"\b{re.escape(n)}\b", value)]
    if request.field == "Decision" and len(contained) > 1:
        return reason, None  # "yes or no" decides nothing
    return reason, (max(contained, key=len) if contained else None)

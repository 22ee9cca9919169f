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
    normalisations: tuple[str, ...] = ()  # what took a free-text answer to its option (read_answer)


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
# Wrappings hosted models put around an answer, detected on the field's value.
_EMPHASIS = re.compile(r"\*\*|__|(?<!\w)[*_](?=\w)|(?<=\w)[*_](?!\w)|`")
_QUOTES = "\"'\u201c\u201d\u2018\u2019\u00ab\u00bb"
# MovieLens and Amazon titles end in "(1987)" and put the article last ("Princess Bride, The (1987)");
# a model tends to write "The Princess Bride", or the title without its year.
_YEAR = re.compile(r"\s*\((?:1[89]|20)[0-9]{2}\)\s*$")
_TRAILING_ARTICLE = re.compile(
    r"^(?P<rest>.+), (?P<article>the|a|an)(?P<year>\s*\([0-9]{4}\))?$", re.IGNORECASE
)
# Every normalisation read_answer may apply, in the order of the stats (flowrec.afl.backends.Stats).
NORMALISATIONS = ("markdown", "quotes", "bare_answer", "trailing_text", "no_year", "article")


def _norm(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", " ", text.lower()).strip()


def _option_keys(option: str) -> list[tuple[tuple[str, ...], str]]:
    """(normalisations it takes, normalised key) of one option: as written, without its year, with its
    trailing article in front, and both."""
    keys: list[tuple[tuple[str, ...], str]] = [((), _norm(option))]
    if _YEAR.search(option):
        keys.append((("no_year",), _norm(_YEAR.sub("", option))))
    match = _TRAILING_ARTICLE.match(option)
    if match:
        front = f"{match['article']} {match['rest']}"
        keys.append((("article",), _norm(front + (match["year"] or ""))))
        if match["year"]:
            keys.append((("no_year", "article"), _norm(front)))
    return keys


def _match(value: str, request: Request) -> tuple[str | None, tuple[str, ...]]:
    """(option, normalisations it took) for a normalised field value; None when no option, or two
    equally good ones, fit. Stricter keys first: the option as written, then without its year, with its
    article in front, both; at each, equality first, then the longest key contained as whole words (a
    sentence around the title: "trailing_text")."""
    keyed = [(steps, key, option) for option in request.options for steps, key in _option_keys(option) if key]
    for level in ((), ("no_year",), ("article",), ("no_year", "article")):
        at_level = [(key, option) for steps, key, option in keyed if steps == level]
        equal = {option for key, option in at_level if key == value}
        if len(equal) == 1:
            return equal.pop(), level
        contained = [(key, option) for key, option in at_level if re.search(rf"\b{re.escape(key)}\b", value)]
        if request.field == "Decision" and len({o for _, o in contained}) > 1:
            return None, ()  # "yes or no" decides nothing
        if contained:
            longest = max(len(key) for key, _ in contained)
            best = {option for key, option in contained if len(key) == longest}
            if len(best) == 1:  # the longest contained wins: "Cape Fear (1991)" beats "Cape Fear"
                return best.pop(), (*level, "trailing_text")
            return None, ()
    return None, ()


def read_answer(text: str, request: Request) -> tuple[str, str | None, tuple[str, ...]]:
    """(reason, chosen option or None, normalisations that took the answer to the option).

    The field's value ("Item: ..." / "Decision: ...", last occurrence; without one, the last line:
    "bare_answer") is compared with the options up to case and punctuation, which drops markdown
    emphasis and quotes (counted as "markdown", "quotes" when present); then see _match.
    """
    reason_match = _REASON.search(text)
    reason = reason_match.group(1).strip() if reason_match else ""
    field_re = rf"(?:\*\*|__)?{request.field}(?:\*\*|__)?\s*:\s*(?:\*\*|__)?\s*(.+)"
    fields = list(re.finditer(field_re, text, flags=re.IGNORECASE))
    raw = fields[-1].group(1) if fields else (text.strip().splitlines() or [""])[-1]
    line = fields[-1].group(0) if fields else raw  # markdown may wrap the label too: "**Item:** ..."
    value = _norm(raw)
    if not value:
        return reason, None, ()
    choice, steps = _match(value, request)
    if choice is None:
        return reason, None, ()
    wrappings = ["bare_answer"] if not fields else []
    if _EMPHASIS.search(line):
        wrappings.append("markdown")
    unwrapped = _EMPHASIS.sub("", raw).strip().rstrip(".!")
    if len(unwrapped) > 1 and unwrapped[0] in _QUOTES and unwrapped[-1] in _QUOTES:
        wrappings.append("quotes")
    fired = set(wrappings) | set(steps)
    return reason, choice, tuple(n for n in NORMALISATIONS if n in fired)


def parse_answer(text: str, request: Request) -> tuple[str, str | None]:
    """(reason, chosen option or None) from a free-text answer (read_answer without the counts)."""
    reason, choice, _ = read_answer(text, request)
    return reason, choice

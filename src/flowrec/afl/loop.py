"""The feedback loop (docs/method.md section 9), over a batch of users at once.

Each round asks the recommendation agent of every still-active user for one item (one backend call
for the batch), then the user agent of every such user for a decision; users who say yes leave the
loop, the others add the round to both memories. After `max_rounds` the last recommended item is the
final one (the last round's item is not judged: nothing would follow from the decision). A rejected
item is removed from that user's options in later rounds, as the prompt tells the agent.

The backend is any callable `list[Request] -> list[Reply]` (flowrec.afl.backends), so tests drive the
loop with scripted agents.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from flowrec.afl.agents import Reply, Request, Round, rec_request, user_request

Backend = Callable[[list[Request]], list[Reply]]


@dataclass(frozen=True)
class Case:
    """One user: history titles (oldest first), candidate titles, the recommendation model's suggestion
    (None: no recommendation model) and the reward model's score per title (None: no reward model)."""

    history: tuple[str, ...]
    candidates: tuple[str, ...]
    suggestion: str | None = None
    rewards: Mapping[str, float] | None = None


@dataclass
class Outcome:
    final: str
    rounds: int  # recommendation rounds run
    accepted: bool  # the user agent said yes to `final`
    memory: list[Round] = field(default_factory=list)
    unparsed: int = 0  # replies of this user's calls that named no option (a fallback was used)


def _checked(replies: list[Reply], requests: list[Request]) -> list[Reply]:
    if len(replies) != len(requests):
        raise RuntimeError(f"backend returned {len(replies)} replies for {len(requests)} requests")
    for reply, request in zip(replies, requests, strict=True):
        if reply.choice not in request.options:
            raise RuntimeError(
                f"backend answered {reply.choice!r}, not one of the {len(request.options)} options"
            )
    return replies


def run_loop(cases: Sequence[Case], backend: Backend, domain: str, max_rounds: int) -> list[Outcome]:
    """AFL for every case; max_rounds=1 is the recommendation agent alone (no feedback)."""
    if max_rounds < 1:
        raise ValueError(f"afl.max_rounds must be at least 1, got {max_rounds}")
    outcomes = [Outcome(final="", rounds=0, accepted=False) for _ in cases]
    active = list(range(len(cases)))
    for round_no in range(1, max_rounds + 1):
        requests = []
        for u in active:
            case, memory = cases[u], outcomes[u].memory
            rejected = {r.item for r in memory}
            options = [c for c in case.candidates if c not in rejected] or list(case.candidates)
            requests.append(rec_request(domain, case.history, options, case.suggestion, memory))
        recs = _checked(backend(requests), requests)
        for u, rec in zip(active, recs, strict=True):
            outcomes[u].final, outcomes[u].rounds = rec.choice, round_no
            outcomes[u].unparsed += not rec.parsed
        if round_no == max_rounds:
            break
        judge = [
            user_request(
                domain,
                cases[u].history,
                rec.choice,
                rec.reason,
                None if cases[u].rewards is None else cases[u].rewards[rec.choice],
                outcomes[u].memory,
            )
            for u, rec in zip(active, recs, strict=True)
        ]
        decisions = _checked(backend(judge), judge)
        still = []
        for u, rec, decision in zip(active, recs, decisions, strict=True):
            outcomes[u].unparsed += not decision.parsed
            if decision.choice == "yes":
                outcomes[u].accepted = True
            else:
                outcomes[u].memory.append(Round(rec.choice, rec.reason, decision.reason))
                still.append(u)
        active = still
        if not active:
            break
    return outcomes


def judge_items(
    cases: Sequence[Case], items: Sequence[str], backend: Backend, domain: str, max_rounds: int
) -> tuple[list[bool], int]:
    """User simulation: does each case's user agent accept `items[i]`? (decisions, unparsed replies)

    max_rounds=0: the user agent alone (no recommender reason, no memory). Otherwise the AFL reading of
    user simulation: the recommendation agent argues for the given item (its only option) and the user
    agent judges with that reason; after a "no" both memories get the round and the recommender argues
    again, up to max_rounds; the last decision counts.
    """
    decisions = [False] * len(cases)
    unparsed = 0
    if max_rounds == 0:
        requests = [
            user_request(domain, c.history, item, None, None if c.rewards is None else c.rewards[item], [])
            for c, item in zip(cases, items, strict=True)
        ]
        replies = _checked(backend(requests), requests)
        return [r.choice == "yes" for r in replies], sum(not r.parsed for r in replies)
    memories: list[list[Round]] = [[] for _ in cases]
    active = list(range(len(cases)))
    for _ in range(max_rounds):
        argue = [rec_request(domain, cases[u].history, [items[u]], None, memories[u]) for u in active]
        recs = _checked(backend(argue), argue)
        judge = [
            user_request(
                domain,
                cases[u].history,
                items[u],
                rec.reason,
                None if cases[u].rewards is None else cases[u].rewards[items[u]],
                memories[u],
            )
            for u, rec in zip(active, recs, strict=True)
        ]
        replies = _checked(backend(judge), judge)
        still = []
        for u, rec, reply in zip(active, recs, replies, strict=True):
            unparsed += (not rec.parsed) + (not reply.parsed)
            decisions[u] = reply.choice == "yes"
            if not decisions[u]:
                memories[u].append(Round(items[u], rec.reason, reply.reason))
                still.append(u)
        active = still
        if not active:
            break
    return decisions, unparsed

"""AFL (docs/method.md section 9): the loop with scripted agents, metrics on hand-worked cases, candidate
lists, answer parsing, the call cache, and the local constrained backend on the tiny model."""

import numpy as np
import pytest

from flowrec.afl.agents import (
    Reply,
    Request,
    Round,
    parse_answer,
    read_answer,
    rec_memory_text,
    rec_request,
    user_memory_text,
)
from flowrec.afl.backends import BackendSettings, Stats
from flowrec.afl.cache import CachedBackend
from flowrec.afl.candidates import candidate_lists, choose_rows, simulation_items
from flowrec.afl.loop import Case, judge_items, run_loop
from flowrec.afl.metrics import hr_at_1, precision_recall_f1
from flowrec.sasrec import SplitArrays


class Scripted:
    """A scripted backend: the recommender picks options in order, the user says yes to `liked` only."""

    identity = {"kind": "scripted"}

    def __init__(self, liked: set[str]):
        self.liked = liked
        self.requests: list[Request] = []
        self.stats = Stats()

    def __call__(self, requests):
        self.requests += requests
        self.stats.calls += len(requests)
        out = []
        for r in requests:
            if r.field == "Item":
                out.append(Reply(reason=f"because {r.options[0]}", choice=r.options[0], parsed=True, text=""))
            else:
                item = r.user.split("Recommended movie: ")[1].split("\n")[0]
                yes = item in self.liked
                out.append(Reply(reason=f"taste {item}", choice="yes" if yes else "no", parsed=True, text=""))
        return out


def _case(candidates, suggestion=None):
    return Case(history=("H1", "H2"), candidates=tuple(candidates), suggestion=suggestion)


def test_loop_stops_at_the_first_yes_and_memory_grows_by_the_template():
    backend = Scripted(liked={"C"})
    [out] = run_loop([_case(["A", "B", "C", "D"])], backend, "movie", max_rounds=4)
    assert (out.final, out.rounds, out.accepted) == ("C", 3, True)
    assert [r.item for r in out.memory] == ["A", "B"]
    rec_calls = [r for r in backend.requests if r.field == "Item"]
    user_calls = [r for r in backend.requests if r.field == "Decision"]
    assert len(rec_calls) == 3 and len(user_calls) == 3
    # Round k's prompts hold exactly the k - 1 earlier rounds, rendered by the memory templates.
    for k, (rec, user) in enumerate(zip(rec_calls, user_calls, strict=True)):
        rounds = [Round(x, f"because {x}", f"taste {x}") for x in ["A", "B"][:k]]
        if rounds:
            assert rec.user.endswith(rec_memory_text(rounds))
            assert user.user.endswith(user_memory_text(rounds))
            assert len(rec_memory_text(rounds).splitlines()) == k
        else:
            assert "Earlier rounds" not in rec.user and "Earlier rounds" not in user.user
    # A rejected item is no longer offered.
    assert rec_calls[2].options == ("C", "D")


def test_loop_round_limit_and_final_item_is_a_candidate():
    backend = Scripted(liked=set())
    cases = [_case(["A", "B", "C", "D", "E", "F"]), _case(["X", "Y"])]
    outs = run_loop(cases, backend, "movie", max_rounds=4)
    assert [o.rounds for o in outs] == [4, 4]
    assert not any(o.accepted for o in outs)
    assert outs[0].final == "D" and len(outs[0].memory) == 3  # the last round is not judged
    # Two candidates, both rejected: the list is offered again; the final item is still a candidate.
    assert outs[1].final in cases[1].candidates
    assert sum(r.field == "Decision" for r in backend.requests) == 6  # 3 judged rounds per user
    one = run_loop(cases, Scripted(liked=set()), "movie", max_rounds=1)
    assert [o.final for o in one] == ["A", "X"] and all(o.rounds == 1 for o in one)


def test_loop_rejects_an_answer_outside_the_options():
    def bad(requests):
        return [Reply(reason="", choice="Z", parsed=True, text="") for _ in requests]

    with pytest.raises(RuntimeError, match="not one of"):
        run_loop([_case(["A", "B"])], bad, "movie", max_rounds=2)


def test_judge_items_alone_and_with_the_loop():
    backend = Scripted(liked={"B"})
    cases = [_case(["A"]), _case(["B"])]
    decisions, unparsed = judge_items(cases, ["A", "B"], backend, "movie", max_rounds=0)
    assert decisions == [False, True] and unparsed == 0
    assert all("recommender's reason" not in r.user for r in backend.requests)
    backend = Scripted(liked={"B"})
    decisions, _ = judge_items(cases, ["A", "B"], backend, "movie", max_rounds=3)
    assert decisions == [False, True]
    # "A" was argued for three times, "B" once.
    assert sum(r.field == "Item" for r in backend.requests) == 4


def test_hr_at_1_hand_worked():
    assert hr_at_1(np.array([3, 5, 7, 9]), np.array([3, 4, 7, 1])) == 0.5
    assert hr_at_1(np.array([], dtype=int), np.array([], dtype=int)) == 0.0
    with pytest.raises(ValueError):
        hr_at_1(np.array([1]), np.array([1, 2]))


def test_precision_recall_f1_hand_worked():
    # yes on 3 pairs, 2 of them positive; 4 positives in all: P = 2/3, R = 1/2, F1 = 4/7.
    said = np.array([1, 1, 1, 0, 0, 0], bool)
    pos = np.array([1, 1, 0, 1, 1, 0], bool)
    m = precision_recall_f1(said, pos)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(4 / 7)
    assert precision_recall_f1(np.zeros(3, bool), np.array([1, 0, 0], bool)) == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
    }


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def test_precision_recall_f1_and_best_threshold_match_their_definitions_on_random_cases():
    """sklearn computes what docs/method.md defines: P = TP / yes, R = TP / positives, F1 their harmonic
    mean, and the threshold of best F1 (ties: the higher) among the distinct scores, by brute force."""
    from flowrec.afl.run import best_threshold

    rng = np.random.default_rng(0)
    for case in range(200):
        n = int(rng.integers(1, 40))
        said, pos = rng.random(n) < rng.random(), rng.random(n) < rng.random()
        tp = int((said & pos).sum())
        precision = tp / said.sum() if said.any() else 0.0
        recall = tp / pos.sum() if pos.any() else 0.0
        m = precision_recall_f1(said, pos)
        assert (m["precision"], m["recall"]) == (precision, recall), case
        assert m["f1"] == pytest.approx(_f1(precision, recall), rel=1e-15, abs=0), case
        scores = rng.integers(0, 8, n) / 8.0  # ties
        f1 = {t: _f1(*_pr(scores >= t, pos)) for t in np.unique(scores)}
        expected = max(t for t in f1 if f1[t] == max(f1.values()))
        assert best_threshold(scores, pos) == expected, case


def _pr(said: np.ndarray, pos: np.ndarray) -> tuple[float, float]:
    tp = int((said & pos).sum())
    return (tp / said.sum() if said.any() else 0.0), (tp / pos.sum() if pos.any() else 0.0)


def _split():
    history = np.array([[0, 1, 2, -1], [5, 6, 7, 8], [9, -1, -1, -1]])
    return SplitArrays(history=history, length=np.array([3, 4, 1]), target=np.array([3, 9, 4]))


def test_candidate_lists_hold_the_target_once_and_no_history_item():
    split = _split()
    rows = np.arange(3)
    lists = candidate_lists(split, rows, n_items=20, n=10, seed=1)
    assert lists.shape == (3, 10)
    for i in rows:
        assert (lists[i] == split.target[i]).sum() == 1
        assert len(set(lists[i])) == 10
        assert not set(lists[i]) & set(split.history[i, : split.length[i]].tolist())
    np.testing.assert_array_equal(lists, candidate_lists(split, rows, 20, 10, seed=1))
    # The target is not always in the same column.
    assert len({int(np.flatnonzero(lists[i] == split.target[i])[0]) for i in rows}) > 1
    with pytest.raises(ValueError, match="negatives"):
        candidate_lists(split, rows, n_items=12, n=10, seed=1)


def test_simulation_items_positive_first_then_negatives():
    split = _split()
    items = simulation_items(split, np.arange(3), n_items=30, max_ratio=9, seed=0)
    assert items.shape == (3, 10)
    np.testing.assert_array_equal(items[:, 0], split.target)
    for i in range(3):
        assert not set(items[i, 1:]) & {*split.history[i, : split.length[i]].tolist(), int(split.target[i])}
    assert len(choose_rows(100, 10, seed=0)) == 10 and list(choose_rows(5, None, 0)) == list(range(5))


def test_parse_answer():
    req = rec_request("movie", ["H"], ["Cape Fear", "Cape Fear (1991)", "Heat"], "Heat", [])
    assert parse_answer("Reason: dark.\nItem: Cape Fear (1991)", req) == ("dark.", "Cape Fear (1991)")
    assert parse_answer("Reason: x\nItem: I pick **heat**!", req)[1] == "Heat"
    assert parse_answer("Reason: x\nItem: Jaws", req)[1] is None
    yes_no = Request("s", "u", "Decision", ("yes", "no"), "no")
    assert parse_answer("Reason: fine\nDecision: Yes.", yes_no) == ("fine", "yes")
    assert parse_answer("Decision: yes or no", yes_no)[1] is None
    assert req.fallback == "Heat"


# MovieLens-style candidates: the year last, the article after a comma; two films share a title.
CANDIDATES = (
    "Princess Bride, The (1987)",
    "Heat (1995)",
    "Cape Fear (1991)",
    "Cape Fear (1962)",
    "Godfather, The (1972)",
    "Godfather: Part II, The (1974)",
    "Star Wars (1977)",
)
ITEM = Request("s", "u", "Item", CANDIDATES, "Heat (1995)")
DECISION = Request("s", "u", "Decision", ("yes", "no"), "no")

# Answers as hosted chat models give them: (answer, request, the option it must map to or None, the
# normalisations that must have fired).
ANSWER_SHAPES = [
    ("Reason: fun.\nItem: Princess Bride, The (1987)", ITEM, "Princess Bride, The (1987)", ()),
    ("Reason: fun.\nItem: princess bride, the (1987)", ITEM, "Princess Bride, The (1987)", ()),
    ("Item: **Princess Bride, The**", ITEM, "Princess Bride, The (1987)", ("markdown", "no_year")),
    ("**Item:** Princess Bride, The (1987)", ITEM, "Princess Bride, The (1987)", ("markdown",)),
    ("**Item**: Heat (1995)", ITEM, "Heat (1995)", ("markdown",)),
    ("Item: *Heat (1995)*", ITEM, "Heat (1995)", ("markdown",)),
    ("Item: `Heat (1995)`", ITEM, "Heat (1995)", ("markdown",)),
    ('Item: "Heat (1995)"', ITEM, "Heat (1995)", ("quotes",)),
    ("Item: \u201cHeat\u201d", ITEM, "Heat (1995)", ("quotes", "no_year")),
    ("Item: 'Heat'.", ITEM, "Heat (1995)", ("quotes", "no_year")),
    ("Sure! Item: Heat (1995). Thanks", ITEM, "Heat (1995)", ("trailing_text",)),
    (
        "Sure! Item: The Princess Bride (1987). Thanks!",
        ITEM,
        "Princess Bride, The (1987)",
        ("trailing_text", "article"),
    ),
    (
        "Reason: x\nItem: The Princess Bride. I think you will love it.",
        ITEM,
        "Princess Bride, The (1987)",
        ("trailing_text", "no_year", "article"),
    ),
    ("Reason: x\nItem: Heat (1995)\n\nLet me know if you need anything else!", ITEM, "Heat (1995)", ()),
    ("Item: The Godfather", ITEM, "Godfather, The (1972)", ("no_year", "article")),
    ("Item: The Godfather: Part II", ITEM, "Godfather: Part II, The (1974)", ("no_year", "article")),
    ("Reason: x\nItem: 7. Star Wars (1977)", ITEM, "Star Wars (1977)", ("trailing_text",)),
    ("I recommend Heat (1995).", ITEM, "Heat (1995)", ("bare_answer", "trailing_text")),
    ("Item: Cape Fear", ITEM, None, ()),  # two films of that title: no guess
    ("Item: Cape Fear (1991)", ITEM, "Cape Fear (1991)", ()),
    ("Item: Jaws (1975)", ITEM, None, ()),  # no candidate
    ("Item: **none of these**", ITEM, None, ()),
    ("I cannot decide.", ITEM, None, ()),
    ("", ITEM, None, ()),
    ("Reason: x\n**Decision:** **Yes**", DECISION, "yes", ("markdown",)),
    ("Decision: No, thanks.", DECISION, "no", ("trailing_text",)),
    ('Decision: "yes"', DECISION, "yes", ("quotes",)),
    ("Reason: I love it.\nDecision: Yes! I would watch it.", DECISION, "yes", ("trailing_text",)),
    ("Decision: yes or no", DECISION, None, ()),
    ("Decision: maybe", DECISION, None, ()),
]


@pytest.mark.parametrize(("text", "request_", "option", "fired"), ANSWER_SHAPES)
def test_real_world_answer_shapes_map_to_their_option(text, request_, option, fired):
    _, choice, normalisations = read_answer(text, request_)
    assert choice == option
    assert normalisations == fired


def test_cache_second_run_makes_no_backend_call(tmp_path):
    backend = Scripted(liked={"B"})
    cases = [_case(["A", "B", "C"]), _case(["C", "B"])]
    first = run_loop(cases, CachedBackend(backend, tmp_path), "movie", max_rounds=4)
    calls = backend.stats.calls
    assert calls > 0
    cached = CachedBackend(backend, tmp_path)
    second = run_loop(cases, cached, "movie", max_rounds=4)
    assert backend.stats.calls == calls and cached.misses == 0 and cached.hits == calls
    assert [(o.final, o.rounds, o.accepted) for o in first] == [
        (o.final, o.rounds, o.accepted) for o in second
    ]

    # An interrupted run keeps every chunk answered before the failure.
    class Failing(Scripted):
        def __call__(self, requests):
            if self.stats.calls >= 2:
                raise RuntimeError("interrupted")
            return super().__call__(requests)

    failing = Failing(liked=set())
    failing.identity = {"kind": "scripted", "run": 2}
    requests = [rec_request("movie", ["H"], [f"C{i}", "D"], None, []) for i in range(5)]
    with pytest.raises(RuntimeError, match="interrupted"):
        CachedBackend(failing, tmp_path, chunk=2)(requests)
    resumed = CachedBackend(Scripted(liked=set()), tmp_path, chunk=2)
    resumed.identity = failing.identity
    resumed(requests)
    assert (resumed.hits, resumed.misses) == (2, 3)
    # Another backend identity (e.g. another temperature) is another key: it calls again.
    other = Scripted(liked={"B"})
    other.identity = {"kind": "scripted", "temperature": 1.0}
    run_loop(cases, CachedBackend(other, tmp_path), "movie", max_rounds=1)
    assert other.stats.calls == 2


def _settings(**overrides):
    values = dict(
        kind="local",
        model="tiny-random",
        base_url=None,
        api_key_env="OPENAI_API_KEY",
        temperature=0.0,
        seed=0,
        max_tokens=64,
        reason_tokens=6,
        batch_size=3,
        concurrency=4,
        max_retries=3,
        backoff_s=0.01,
        timeout_s=30.0,
    )
    values.update(overrides)
    return BackendSettings(**values)


def test_local_backend_answers_are_options_and_batch_independent(tokenizer, tiny_model):
    from flowrec.afl.agents import user_request
    from flowrec.afl.local import LocalBackend

    backend = LocalBackend(_settings(), threads=1, model=tiny_model, tokenizer=tokenizer)
    requests = [
        rec_request("movie", ["Heat", "Jaws"], ["Cape Fear", "Cape Fear (1991)", "Toy Story"], None, []),
        rec_request("product", ["A Cable"], ["USB Hub", "Mouse"], "Mouse", []),
        user_request("movie", ["Heat"], "Jaws", "it is tense", 0.9, []),
        rec_request("movie", ["Alien"], ["Aliens", "Alien 3", "Alien Resurrection", "Heat"], None, []),
    ]
    together = backend(requests)
    assert [r.choice in q.options for r, q in zip(together, requests, strict=True)] == [True] * 4
    assert all(r.parsed for r in together)
    alone = [backend([q])[0] for q in requests]
    assert [r.choice for r in alone] == [r.choice for r in together]
    assert [r.reason for r in alone] == [r.reason for r in together]
    assert backend.stats.calls == 8 and backend.stats.prompt_tokens > 0


def test_best_threshold_hand_worked():
    from flowrec.afl.run import best_threshold

    scores = np.array([0.9, 0.8, 0.8, 0.3, 0.1])
    positive = np.array([True, False, True, False, False])
    # t=0.9: P 1, R 1/2, F1 2/3; t=0.8: P 2/3, R 1, F1 0.8; t=0.3: F1 2/3; t=0.1: F1 4/7.
    assert best_threshold(scores, positive) == 0.8
    assert best_threshold(np.array([0.5, 0.2]), np.array([True, False])) == 0.5

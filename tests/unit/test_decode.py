"""Trie-constrained batched beam search, temperature and D3's assistant (flowrec.decode)."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from flowrec.decode.d3 import assistant_log_probs, title_masses
from flowrec.decode.predictions import predictions_table, smallest_item_of_title
from flowrec.decode.run import DecodeSettings
from flowrec.decode.search import constrained_beam_search
from flowrec.model import load_tokenizer, save_tuned, tiny_random_model
from flowrec.prompts import prompt_ids, title_ids_batch
from flowrec.settings import settings_from_block
from flowrec.trie import Trie

# Items 0..8; "Heat" twice (items 3 and 8), and a title that is a prefix of another.
ITEMS = [
    "Back to the Future",
    "Back to the Future II",
    "Toy Story",
    "Heat",
    "Casino",
    "Fargo",
    "Babe",
    "Se7en",
    "Heat",
]
TITLES = list(dict.fromkeys(ITEMS))


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    tokenizer = load_tokenizer("tiny-random")
    model = tiny_random_model(tokenizer, seed=0).eval()
    trie = Trie.build(ITEMS, title_ids_batch(tokenizer, TITLES))
    prompts = [  # three different lengths: left padding is exercised whenever they share a batch
        prompt_ids(tokenizer, ["Heat"], 10),
        prompt_ids(tokenizer, ["Heat", "Casino", "Toy Story", "Babe"], 10),
        prompt_ids(tokenizer, ["Fargo", "Se7en"], 10),
    ]
    assert len({len(p) for p in prompts}) == 3
    return tokenizer, model, trie, prompts


def search(setup, prompts=None, **kwargs):
    tokenizer, model, trie, default_prompts = setup
    kwargs.setdefault("num_beams", 10)
    kwargs.setdefault("num_return", kwargs["num_beams"])
    kwargs.setdefault("batch_size", 8)
    return constrained_beam_search(
        model, prompts or default_prompts, trie, pad_token_id=tokenizer.pad_token_id, **kwargs
    )


class ForcePath:
    """Forward hook: at generated step s, add `bias` to the logit of path[s] in every row.

    The hooked model keeps Hugging Face's call signature and KV cache; only its next-token logits are
    pushed toward one token path.
    """

    def __init__(self, path: list[int], bias: float = 30.0):
        self.path, self.bias, self.step = path, bias, 0

    def __call__(self, module, args, kwargs, output):
        if kwargs["input_ids"].shape[1] > 1:  # prefill of the prompts: generation starts
            self.step = 0
        if self.step < len(self.path):
            output.logits[..., self.path[self.step]] += self.bias
        self.step += 1
        return output


def teacher_forced_score(model, prompt, path, temperature=1.0, length_normalise=True) -> float:
    """Score of one title from one unpadded forward of prompt + title (no cache, no batching)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + path])).logits[0].double()
    logp = torch.log_softmax(logits[len(prompt) - 1 : -1] / temperature, dim=-1)
    total = logp.gather(1, torch.tensor(path)[:, None]).sum().item()
    return total / len(path) if length_normalise else total


def test_every_title_is_a_real_distinct_item_and_all_are_returned_when_few(setup):
    _, _, trie, prompts = setup
    results = search(setup, num_beams=10, num_return=10)
    for ranked in results:
        ids = [t for t, _ in ranked]
        assert len(ids) == len(set(ids)) == len(TITLES)  # 8 titles < 10 beams: all of them
        assert {trie.titles[t] for t in ids} == set(TITLES)
        scores = [s for _, s in ranked]
        assert scores == sorted(scores, reverse=True)
    for ranked in search(setup, num_beams=3, num_return=2):
        assert len(ranked) == 2 and all(trie.titles[t] in TITLES for t, _ in ranked)


@pytest.mark.parametrize("temperature,length_normalise", [(1.0, True), (2.0, False)])
def test_scores_equal_teacher_forced_log_likelihood(setup, temperature, length_normalise):
    _, model, trie, prompts = setup
    # With more beams than titles beam search is exhaustive: every title, exactly scored.
    results = search(setup, num_beams=10, temperature=temperature, length_normalise=length_normalise)
    for prompt, ranked in zip(prompts, results, strict=True):
        for title, score in ranked:
            want = teacher_forced_score(
                model, prompt, trie.title_token_ids(title), temperature, length_normalise
            )
            assert score == pytest.approx(want, abs=1e-4)


def test_forced_title_comes_first(setup):
    _, model, trie, prompts = setup
    baseline = search(setup, num_beams=4, num_return=4)
    for title in ("Casino", "Back to the Future"):
        path = trie.title_token_ids(trie.title_index[title])
        handle = model.register_forward_hook(ForcePath(path), with_kwargs=True)
        try:
            results = search(setup, num_beams=4, num_return=4)
        finally:
            handle.remove()
        assert all(trie.titles[ranked[0][0]] == title for ranked in results)
        assert any(trie.titles[ranked[0][0]] != title for ranked in baseline)  # the bias made the difference


def test_prefix_title_and_its_extension_are_both_returned(setup):
    _, model, trie, prompts = setup
    short = trie.title_token_ids(trie.title_index["Back to the Future"])
    long = trie.title_token_ids(trie.title_index["Back to the Future II"])
    shared = next(i for i, (a, b) in enumerate(zip(short, long, strict=False)) if a != b)
    assert shared >= 3 and short[shared:] != long[shared:]
    # Push every beam down the shared prefix; with two beams the two titles must both finish.
    handle = model.register_forward_hook(ForcePath(long[:shared]), with_kwargs=True)
    try:
        results = search(setup, num_beams=2, num_return=2)
    finally:
        handle.remove()
    for ranked in results:
        assert sorted(trie.titles[t] for t, _ in ranked) == ["Back to the Future", "Back to the Future II"]
        table = predictions_table(np.array([0]), [ranked], trie).to_pylist()[0]
        assert sorted(table["item_ids"]) == [0, 1]  # distinct items


@pytest.mark.parametrize("length_normalise", [True, False])
def test_batched_equals_one_prompt_at_a_time(setup, length_normalise):
    _, _, _, prompts = setup
    kwargs = dict(num_beams=3, num_return=3, length_normalise=length_normalise)
    alone = [search(setup, prompts=[p], **kwargs)[0] for p in prompts]
    for batch_size in (2, 8):
        batched = search(setup, batch_size=batch_size, **kwargs)
        for a, b in zip(alone, batched, strict=True):
            assert [t for t, _ in a] == [t for t, _ in b]
            np.testing.assert_allclose([s for _, s in a], [s for _, s in b], atol=1e-5)


def test_d3_with_weight_one_equals_plain_decoding_without_length_normalisation(setup):
    _, _, trie, prompts = setup
    masses = np.random.default_rng(0).dirichlet(np.ones(trie.n_titles), size=len(prompts))
    plain = search(setup, num_beams=3, length_normalise=False)
    d3 = search(
        setup, num_beams=3, length_normalise=False, assistant_title_scores=masses, assistant_weight=1.0
    )
    for a, b in zip(plain, d3, strict=True):
        assert [t for t, _ in a] == [t for t, _ in b]
        np.testing.assert_allclose([s for _, s in a], [s for _, s in b], atol=1e-9)


def test_strong_assistant_moves_its_title_to_the_top(setup):
    _, _, trie, prompts = setup
    plain = search(setup, num_beams=3, length_normalise=False)
    favoured = trie.title_index["Casino"]
    assert all(ranked[0][0] != favoured for ranked in plain)
    masses = np.full((len(prompts), trie.n_titles), 1e-4)
    masses[:, favoured] = 1.0
    d3 = search(
        setup, num_beams=3, length_normalise=False, assistant_title_scores=masses, assistant_weight=0.2
    )
    assert all(ranked[0][0] == favoured for ranked in d3)


def test_assistant_probabilities_are_renormalised_subtree_masses(setup):
    _, _, trie, _ = setup
    masses = torch.rand(3, trie.n_titles, dtype=torch.float64) + 0.1
    first = trie.title_token_ids(0)[0]
    nodes = torch.tensor([0, -1, int(trie.step(torch.tensor([0]), torch.tensor([first])))])  # -1: empty slot
    row, token = trie.allowed_mask(nodes, trie.max_token + 1).nonzero(as_tuple=True)
    child = trie.step(nodes[row], token)
    logp = assistant_log_probs(trie, masses, nodes, row, child)
    assert row.unique().tolist() == [0, 2]
    per_row = torch.zeros(3, dtype=torch.float64).index_add_(0, row, logp.exp())
    assert torch.allclose(per_row, torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64))
    for r, c, lp in zip(row.tolist(), child.tolist(), logp.tolist(), strict=True):
        if r == 0:  # p(child | root) = mass below the child / total mass
            below = masses[0, trie.leaf_start[c] : trie.leaf_end[c]].sum()
            assert lp == pytest.approx((below / masses[0].sum()).log().item())


def test_title_masses_sum_items_sharing_a_title_and_helpers(setup):
    _, _, trie, _ = setup
    p_ui = np.random.default_rng(1).random((2, len(ITEMS))).astype(np.float16)
    masses = title_masses(p_ui, trie.item_title, trie.n_titles)
    heat = trie.title_index["Heat"]
    np.testing.assert_allclose(masses[:, heat], p_ui[:, 3].astype(float) + p_ui[:, 8].astype(float))
    np.testing.assert_allclose(masses.sum(1), p_ui.astype(float).sum(1))
    assert smallest_item_of_title(trie)[heat] == 3


def test_arguments_are_checked(setup):
    with pytest.raises(ValueError, match="num_return"):
        search(setup, num_beams=2, num_return=3)
    with pytest.raises(ValueError, match="assistant_title_scores"):
        search(setup, assistant_title_scores=np.ones((1, 2)))
    with pytest.raises(ValueError, match="unknown key"):
        settings_from_block(DecodeSettings, {"num_beams": 2, "beams": 3})


def stage_inputs(setup, tmp_path, nproc: int = 1) -> SimpleNamespace:
    """The decode rule's `snakemake` object (flowrec.stages.decode_method) for D3 on 3 of 4 toy test samples, run in `nproc` processes."""
    tokenizer, model, trie, _ = setup
    save_tuned(model, tokenizer, tmp_path / "model", "tiny-random")
    trie.save(tmp_path / "trie.npz")
    items = pd.DataFrame(
        {"item_id": np.arange(len(ITEMS)), "title": ITEMS, "source_id": [str(i) for i in range(9)]}
    )
    items.to_parquet(tmp_path / "items.parquet")
    histories = [[0, 3], [2, 4, 5], [1], [6, 7, 8, 2]]
    test = pa.table({"history": pa.array(histories, type=pa.list_(pa.int64())), "target": [1, 2, 3, 4]})
    pq.write_table(test, tmp_path / "test.parquet")
    np.save(
        tmp_path / "p_ui.npy", np.random.default_rng(0).dirichlet(np.ones(len(ITEMS)), 4).astype(np.float16)
    )
    settings = dict(test_samples=3, seed=0, num_beams=4, num_return=3, batch_size=2)
    return SimpleNamespace(
        input=SimpleNamespace(
            **{
                k: str(tmp_path / v)
                for k, v in [
                    ("model", "model"),
                    ("trie", "trie.npz"),
                    ("item_table", "items.parquet"),
                    ("test", "test.parquet"),
                    ("p_ui", "p_ui.npy"),
                ]
            }
        ),
        output=SimpleNamespace(predictions=str(tmp_path / "predictions" / "d3.parquet")),
        log=[str(tmp_path / "decode.log")],
        params=SimpleNamespace(
            decode={**settings, "temperature": 1.0, "length_normalise": False, "assistant_weight": 0.5},
            prompt={"max_history": 10},
        ),
        wildcards=SimpleNamespace(dataset="toy", method="d3"),
        rule="decode",
        threads=1,
        resources=SimpleNamespace(gpu=0, nproc=nproc),
    )


def test_stage_writes_predictions_for_the_seeded_subset(setup, tmp_path):
    from flowrec.stages.decode_method import STAGE
    from flowrec.subsets import seeded_subset

    snakemake = stage_inputs(setup, tmp_path)
    STAGE.main(snakemake)
    table = pq.read_table(snakemake.output.predictions)
    assert table.schema.field("titles").type == pa.list_(pa.string())
    rows = table.to_pylist()
    assert len(rows) == 3 and all(len(r["titles"]) == 3 for r in rows)
    assert [r["sample"] for r in rows] == seeded_subset(4, 3, 0).tolist()
    for r in rows:
        assert all(
            ITEMS[i] == t and ITEMS.index(t) == i for t, i in zip(r["titles"], r["item_ids"], strict=True)
        )
    assert "per prompt" in (tmp_path / "decode.log").read_text()


@pytest.mark.slow
def test_two_processes_decode_what_one_does(setup, tmp_path):
    """torchrun with 2 gloo processes, prompts dealt out round-robin: the one-process predictions."""
    from flowrec.stages.decode_method import STAGE

    one, two = stage_inputs(setup, tmp_path / "one"), stage_inputs(setup, tmp_path / "two", nproc=2)
    STAGE.main(one)
    STAGE.main(two)
    a = pq.read_table(one.output.predictions).to_pylist()
    b = pq.read_table(two.output.predictions).to_pylist()
    assert [(r["sample"], r["titles"]) for r in a] == [(r["sample"], r["titles"]) for r in b]
    np.testing.assert_allclose([r["scores"] for r in b], [r["scores"] for r in a], rtol=1e-5)
    text = (tmp_path / "two/decode.log").read_text()
    assert "2 process(es)" in text
    # the torchrun worker's own summary reached the rule's log, not only the job's stderr
    assert "s per prompt (2 process(es)" in text, text

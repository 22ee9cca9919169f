"""Reference rows (Random, MostPop) on a hand-made split, scored by the evaluate stage, and the results
table with intervals and the paired comparison (make_tables) built from them."""

import json

import numpy as np
import pandas as pd
import pytest

from flowrec.reference import random_lists, reference_predictions
from flowrec.stages.evaluate_method import evaluate
from flowrec.stages.make_tables import make_tables

# items 0..5; items 1 and 4 share the title "B"; titles in order of first item id: A B C D E
ITEMS = pd.DataFrame(
    {"item_id": range(6), "title": ["A", "B", "C", "D", "B", "E"], "source_id": list("uvwxyz")}
)
# history titles: C A | B C | A B D | B: B 3, C 2, A 2 (C first seen at position 0, A at 1), D 1, E 0
TRAIN = pd.DataFrame({"history": [[2, 0], [1, 2], [0, 4, 3], [1]], "target": [1, 3, 2, 0]})
TEST = pd.DataFrame({"history": [[0]] * 6, "target": [4, 2, 0, 5, 3, 1]})  # titles B C A E D B
METRICS = {"ks": [1, 3], "fairness_ks": [3], "bootstrap_draws": 200, "bootstrap_seed": 0, "confidence": 0.95}
DECODE = {"test_samples": None, "seed": 0, "num_return": 3}


def test_mostpop_ranks_by_history_frequency_ties_by_first_appearance() -> None:
    table = reference_predictions("mostpop", ITEMS["title"], TRAIN["history"], n_test=2, n=4, seed=0)
    rows = table.to_pylist()
    assert [r["sample"] for r in rows] == [0, 1]
    assert rows[0]["titles"] == ["B", "C", "A", "D"] == rows[1]["titles"]  # C seen before A
    assert rows[0]["item_ids"] == [1, 2, 0, 3]  # B names its smallest item
    assert rows[0]["scores"] == pytest.approx([3 / 8, 2 / 8, 2 / 8, 1 / 8])


def test_random_is_seeded_distinct_and_uniform_over_the_catalogue() -> None:
    lists = random_lists(4000, 5, 3, seed=1)
    assert np.array_equal(lists, random_lists(4000, 5, 3, seed=1))
    assert not np.array_equal(lists, random_lists(4000, 5, 3, seed=2))
    assert all(len(set(r)) == 3 for r in lists.tolist()) and lists.min() >= 0 and lists.max() < 5
    # each title is in a list with probability 3/5 and first with probability 1/5
    assert np.bincount(lists.ravel(), minlength=5) / 4000 == pytest.approx([0.6] * 5, abs=0.03)
    assert np.bincount(lists[:, 0], minlength=5) / 4000 == pytest.approx([0.2] * 5, abs=0.03)
    table = reference_predictions("random", ITEMS["title"], TRAIN["history"], n_test=6, n=3, seed=0)
    assert set(t for r in table.column("titles").to_pylist() for t in r) <= set("ABCDE")
    with pytest.raises(ValueError, match="unknown reference method"):
        reference_predictions("pop", ITEMS["title"], TRAIN["history"], 6, 3, 0)


@pytest.fixture
def split(tmp_path):
    ITEMS.to_parquet(tmp_path / "items.parquet")
    TRAIN.to_parquet(tmp_path / "train.parquet")
    TEST.to_parquet(tmp_path / "test.parquet")
    groups = pd.DataFrame(
        {"title": list("ABCDE"), "title_id": range(5), "frequency": [2, 3, 2, 1, 0], "group": [0, 0, 1, 1, 1]}
    )
    groups.to_parquet(tmp_path / "groups.parquet")
    (tmp_path / "groups.json").write_text(json.dumps({"shares": [5 / 8, 3 / 8], "n_groups": 2}))
    return tmp_path


def score(root, method: str) -> dict:
    table = reference_predictions(method, ITEMS["title"], TRAIN["history"], n_test=6, n=3, seed=0)
    pd.DataFrame(table.to_pydict()).to_parquet(root / f"{method}.parquet")
    return evaluate(
        predictions=str(root / f"{method}.parquet"),
        test=str(root / "test.parquet"),
        item_table=str(root / "items.parquet"),
        groups=str(root / "groups.parquet"),
        groups_json=str(root / "groups.json"),
        metrics_json=str(root / f"{method}.json"),
        samples=str(root / f"{method}.samples.parquet"),
        metrics=METRICS,
        decode=DECODE,
        dataset="toy",
        method=method,
    )


def test_reference_rows_scored_with_intervals_and_compared(split) -> None:
    mostpop = score(split, "mostpop")
    # list B C A for every sample; targets B C A E D B: hits @1 at samples 0, 5; @3 at 0, 1, 2, 5
    assert mostpop["HR@1"] == pytest.approx(2 / 6) and mostpop["HR@3"] == pytest.approx(4 / 6)
    assert mostpop["NDCG@3"] == pytest.approx((1 + 1 / np.log2(3) + 0.5 + 1) / 6)
    assert mostpop["Coverage@3"] == pytest.approx(3 / 5)
    lo, hi = mostpop["ci"]["HR@3"]
    assert lo < 4 / 6 < hi and mostpop["ci"]["Coverage@3"] == [0.6, 0.6]  # one list: coverage is fixed
    assert mostpop["ci"]["TTR"] == pytest.approx([1 / 6, 1 / 6])  # 6 x (B C A): 3 words of 18
    random = score(split, "random")
    assert random["samples"] == 6 and set(random["ci"]) == set(mostpop["ci"])
    for name in ("bigrec", "flower"):  # the same lists under the LLM names: the comparison must be 0
        (split / f"{name}.json").write_text((split / "mostpop.json").read_text())
        (split / f"{name}.samples.parquet").write_bytes((split / "mostpop.samples.parquet").read_bytes())
    methods = ["random", "mostpop", "bigrec", "flower"]
    out = {k: str(split / f"out.{k}") for k in ("csv", "md", "paired_csv", "paired_figure")}
    make_tables(
        metrics=[str(split / f"{m}.json") for m in methods],
        samples=[str(split / f"{m}.samples.parquet") for m in methods],
        methods=methods,
        metrics_settings=METRICS,
        baseline="bigrec",
        dataset="toy",
        **out,
    )
    table = pd.read_csv(out["csv"], index_col="Method")
    assert list(table.index) == ["Random", "MostPop", "BIGRec", "Flower"]
    assert table.loc["MostPop", "HR@3_lo"] == pytest.approx(lo) and "HR@3_hi" in table.columns
    paired = pd.read_csv(out["paired_csv"])
    assert set(paired["Method"]) == {"Random", "MostPop", "Flower"}
    same = paired[paired["Method"].isin(["MostPop", "Flower"])]
    assert (same[["difference", "lo", "hi"]].to_numpy() == 0).all() and not same["excludes_zero"].any()
    md = open(out["md"]).read()
    header = md.splitlines()[2].split(" | ")
    mostpop_row = next(line for line in md.splitlines() if line.startswith("| MostPop |")).split(" | ")
    assert mostpop_row[header.index("HR@1")].startswith(f"{2 / 6:.4f} [")  # value [lo, hi]
    assert "## Difference to BIGRec" in md and "| Flower | 0.000 [0.000, 0.000] |" in md
    assert open(out["paired_figure"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"

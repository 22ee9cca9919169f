"""AFL's stage functions on small files: candidates, the base row's HR@1 from p_ui by hand, an LLM row
with a scripted backend (through the cache), the reward-model row's threshold, and the tables."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flowrec.afl import run as afl_run
from flowrec.afl.agents import Reply
from flowrec.afl.backends import BackendSettings, Stats
from flowrec.afl.candidates import candidate_lists, choose_rows, simulation_items
from flowrec.afl.data import AflSettings, read_split_and_titles, write_candidates
from flowrec.afl.tables import write_tables
from flowrec.settings import settings_from_block

N_ITEMS = 40


class YesToTarget:
    """Recommends the first option; says yes only to titles ending in '7'."""

    identity = {"kind": "scripted"}

    def __init__(self):
        self.stats = Stats()

    def __call__(self, requests):
        self.stats.calls += len(requests)
        out = []
        for r in requests:
            if r.field == "Item":
                out.append(Reply("first", r.options[0], True, ""))
            else:
                item = r.user.split("Recommended movie: ")[1].split("\n")[0]
                out.append(Reply("ok", "yes" if item.endswith("7") else "no", True, ""))
        return out


@pytest.fixture()
def files(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("valid", "test"):
        histories = [rng.choice(30, size=3, replace=False).tolist() for _ in range(12)]
        targets = [int(t) for t in rng.integers(30, N_ITEMS, size=12)]
        pq.write_table(
            pa.table(
                {
                    "history": pa.array(histories, pa.list_(pa.int64())),
                    "target": pa.array(targets, pa.int64()),
                }
            ),
            tmp_path / f"{split}.parquet",
        )
        # p_ui that always ranks the target first
        p = np.full((12, N_ITEMS), 0.01, dtype=np.float16)
        p[np.arange(12), targets] = 0.5
        np.save(tmp_path / f"p_ui_{split}.npy", p)
    items = pa.table(
        {"item_id": pa.array(np.arange(N_ITEMS)), "title": [f"Film {i}" for i in range(N_ITEMS)]}
    )
    pq.write_table(items, tmp_path / "items.parquet")
    split, titles = read_split_and_titles(tmp_path / "test.parquet", tmp_path / "items.parquet")
    rows = choose_rows(len(split), 8, seed=1)
    write_candidates(
        tmp_path / "candidates.parquet",
        rows,
        candidate_lists(split, rows, N_ITEMS, 5, seed=1),
        simulation_items(split, rows, N_ITEMS, 3, seed=1),
    )
    return tmp_path


def _backend():
    block = {"kind": "local", "model": "scripted"}
    return settings_from_block(BackendSettings, block, "afl.backend")


def test_rows_and_tables(files, monkeypatch):
    settings = settings_from_block(
        AflSettings, {"users": 8, "n_candidates": 5, "ratios": [1, 3], "max_rounds": 3}, "afl"
    )
    monkeypatch.setattr(afl_run, "make_backend", lambda s, threads=1: YesToTarget())
    common = dict(
        test=str(files / "test.parquet"),
        items=str(files / "items.parquet"),
        candidates=str(files / "candidates.parquet"),
    )
    args = dict(**common, rec_p_ui=str(files / "p_ui_test.npy"), reward_p_ui=str(files / "p_ui_test.npy"))
    rec = {}
    for variant in ("base", "afl"):
        rec[variant] = afl_run.recommend(
            variant, **args, out=str(files / f"{variant}.parquet"), metrics=str(files / "sasrec" / f"{variant}.json"),
            settings=settings, backend_settings=_backend(), cache=str(files / "cache"), domain="movie",
        )  # fmt: skip
    # p_ui ranks every target first: the base model's suggestion is always right.
    assert rec["base"]["HR@1"] == 1.0 and "calls" not in rec["base"]
    outcomes = pq.read_table(files / "afl.parquet").to_pandas()
    # The scripted user accepts titles ending in 7 only; a final item is always one of the candidates.
    assert (outcomes["accepted"] == outcomes["final"].str.endswith("7")).all()
    assert rec["afl"]["HR@1"] == pytest.approx(outcomes["hit"].mean())
    assert rec["afl"]["calls"]["calls"] == rec["afl"]["cache_misses"] > 0
    sim = afl_run.simulate(
        "reward_model", **common, valid=str(files / "valid.parquet"), p_ui_test=str(files / "p_ui_test.npy"),
        p_ui_valid=str(files / "p_ui_valid.npy"), metrics=str(files / "sim" / "reward_model.json"),
        settings=settings, backend_settings=_backend(), cache=str(files / "cache"), domain="movie",
    )  # fmt: skip
    # Valid p_ui separates positives perfectly, so does the chosen threshold on test.
    assert sim["ratios"]["1:3"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    write_tables(
        [str(files / "sasrec" / "base.json"), str(files / "sasrec" / "afl.json")],
        [str(files / "sim" / "reward_model.json")],
        str(files / "table.csv"),
        str(files / "table.md"),
    )
    md = (files / "table.md").read_text()
    assert "Base Model" in md and "AFL" in md and "Reward Model" in md and "8 users" in md
    assert json.loads((files / "sasrec" / "afl.json").read_text())["variant"] == "afl"

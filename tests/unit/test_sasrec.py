"""SASRec stage on a tiny synthetic split: the next item is always (last history item + 1) mod N."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from flowrec.sasrec import (
    SasrecSettings,
    TitleIndex,
    export_p_ui,
    ranking_metrics,
    split_arrays,
    target_ranks,
)
from flowrec.settings import settings_from_block
from flowrec.titles import title_scores

N_ITEMS = 30
SIZES = {"train": 1500, "valid": 120, "test": 150}


def rule_split(n: int, rng: np.random.Generator) -> pa.Table:
    """Histories of 1-6 random items; target = (last + 1) % N_ITEMS, so row i is recognisable."""
    lengths = rng.integers(1, 7, size=n)
    histories = [rng.integers(0, N_ITEMS, size=length).tolist() for length in lengths]
    targets = [(h[-1] + 1) % N_ITEMS for h in histories]
    return pa.table(
        {
            "user": pa.array([None] * n, type=pa.string()),
            "history": pa.array(histories, type=pa.list_(pa.int64())),
            "target": pa.array(targets, type=pa.int64()),
            "timestamp": pa.array([None] * n, type=pa.int64()),
        }
    )


def tiny_settings(**overrides) -> SasrecSettings:
    params = dict(
        hidden_size=16, n_layers=1, n_heads=2, inner_size=32, dropout=0.1, learning_rate=0.01,
        batch_size=64, epochs=1, patience=1, seed=7,
    )  # fmt: skip
    return settings_from_block(SasrecSettings, {**params, **overrides}, "sasrec")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for name, n in SIZES.items():
        pq.write_table(rule_split(n, rng), folder / f"{name}.parquet")
    # Items 25..29 repeat the titles of items 0..4: the top-10 list must still hold distinct titles.
    items = pa.table(
        {
            "item_id": pa.array(np.arange(N_ITEMS), type=pa.int64()),
            "title": [f"Album {j % 25}" for j in range(N_ITEMS)],
            "source_id": [str(j) for j in range(N_ITEMS)],
        }
    )
    pq.write_table(items, folder / "items.parquet")
    return folder


@pytest.fixture(scope="module")
def splits(data_dir):
    return {name: split_arrays(pq.read_table(data_dir / f"{name}.parquet"), N_ITEMS, name) for name in SIZES}


def test_settings_reject_unknown_key():
    with pytest.raises(ValueError, match="unknown key.*learning_rte"):
        settings_from_block(SasrecSettings, {"learning_rte": 0.1}, "sasrec")
    with pytest.raises(ValueError, match="CE or BCE"):
        settings_from_block(SasrecSettings, {"loss": "BPR"}, "sasrec")


def test_split_arrays_pad_and_check():
    table = pa.table({"history": [[3, 1], [2]], "target": [0, 4]})
    arrays = split_arrays(table, 5)
    np.testing.assert_array_equal(arrays.history, [[3, 1], [2, -1]])
    np.testing.assert_array_equal(arrays.length, [2, 1])
    with pytest.raises(ValueError, match="row 1 has an empty history"):
        split_arrays(pa.table({"history": [[1], []], "target": [0, 0]}), 5, "x.parquet")
    with pytest.raises(ValueError, match="item id 7 outside 0..4"):
        split_arrays(pa.table({"history": [[7]], "target": [0]}), 5)


def test_ranks_and_metrics_by_hand():
    logits = torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]])
    ranks = target_ranks(logits, torch.tensor([2, 0])).numpy()
    np.testing.assert_array_equal(ranks, [1, 0])
    m = ranking_metrics(ranks, ks=(1, 2))
    assert m["HR@1"] == 0.5 and m["HR@2"] == 1.0
    assert m["NDCG@2"] == pytest.approx((1 / np.log2(3) + 1.0) / 2)


def test_title_index_and_scores(tmp_path):
    pq.write_table(
        pa.table({"item_id": [2, 0, 1, 3], "title": ["B", "A", "B", "C"]}), tmp_path / "items.parquet"
    )
    index = TitleIndex.read(tmp_path / "items.parquet")
    assert index.titles == ["A", "B", "C"]
    np.testing.assert_array_equal(index.item_title, [0, 1, 1, 2])
    np.testing.assert_array_equal(index.title_item, [0, 1, 3])  # smallest item id per title
    probs = torch.tensor([[0.1, 0.2, 0.6, 0.1]])
    scores = title_scores(probs, torch.from_numpy(index.item_title), 3, reduce="max", empty=-1.0)
    torch.testing.assert_close(scores, torch.tensor([[0.1, 0.6, 0.1]]))


@pytest.fixture(scope="module")
def trained(splits):
    from flowrec.sasrec_recbole import train_sasrec

    return train_sasrec(splits, N_ITEMS, tiny_settings(), threads=1)


def test_p_ui_rows_belong_to_their_samples(trained, splits, tmp_path):
    test = splits["test"]
    ranks = export_p_ui(trained.scores, test, N_ITEMS, tmp_path / "p.npy", batch_size=32)
    p_ui = np.load(tmp_path / "p.npy", mmap_mode="r")
    assert p_ui.shape == (len(test), N_ITEMS) and p_ui.dtype == np.float16
    # By construction: a separate forward pass on single samples gives the same rows.
    for i in (0, 57, len(test) - 1):
        one = trained.scores(
            torch.from_numpy(test.history[i : i + 1]), torch.from_numpy(test.length[i : i + 1])
        )
        np.testing.assert_allclose(p_ui[i], torch.softmax(one, 1)[0].numpy(), atol=2e-3)
    # By the rule: the target is predictable from the last item, far above chance (1 / N_ITEMS).
    assert (ranks == 0).mean() > 3 / N_ITEMS


def test_bce_loss_trains(splits):
    from flowrec.sasrec_recbole import train_sasrec

    model = train_sasrec(splits, N_ITEMS, tiny_settings(loss="BCE"), threads=1)
    assert model.best_epoch == 0 and np.isfinite(model.best_valid_ndcg10)


def test_stage_outputs(data_dir, trained, tmp_path):
    from flowrec.sasrec_recbole import train_and_export

    out = tmp_path / "sasrec"
    p_ui = {name: out / f"p_ui_{name}.npy" for name in SIZES}
    train_and_export(
        items_path=data_dir / "items.parquet",
        split_paths={name: data_dir / f"{name}.parquet" for name in SIZES},
        settings=tiny_settings(),
        threads=1,
        model_path=out / "model.pth",
        metrics_path=out / "metrics.json",
        p_ui_paths=p_ui,
        predictions_path=tmp_path / "predictions" / "sasrec.parquet",
    )
    for name, n in SIZES.items():
        rows = np.load(p_ui[name], mmap_mode="r")
        assert rows.shape == (n, N_ITEMS) and rows.dtype == np.float16
        np.testing.assert_allclose(rows.astype(np.float32).sum(axis=1), 1.0, atol=5e-3)
        assert (rows >= 0).all()
    assert not list(out.glob("*.part"))  # atomic writes left nothing behind

    metrics = json.loads((out / "metrics.json").read_text())
    for split in ("valid", "test"):
        assert set(metrics[split]) == {"HR@5", "NDCG@5", "HR@10", "NDCG@10"}
        assert 0 <= metrics[split]["NDCG@10"] <= metrics[split]["HR@10"] <= 1
    state = torch.load(out / "model.pth", weights_only=True)
    assert state["recbole_id"].shape == (N_ITEMS,) and state["settings"]["hidden_size"] == 16
    # Same data, settings and seed as the `trained` fixture: the very same weights (CPU determinism).
    for key, value in trained.model.state_dict().items():
        torch.testing.assert_close(state["state_dict"][key], value, rtol=0, atol=0)

    predictions = pq.read_table(tmp_path / "predictions" / "sasrec.parquet").to_pylist()
    items = pq.read_table(data_dir / "items.parquet").to_pylist()
    title_of = {row["item_id"]: row["title"] for row in items}
    assert [row["sample"] for row in predictions] == list(range(SIZES["test"]))
    for row in predictions:
        assert len(row["titles"]) == 10 and len(set(row["titles"])) == 10
        assert [title_of[i] for i in row["item_ids"]] == row["titles"]  # real items, named right
        assert all(
            min(j for j, t in title_of.items() if t == title) == i
            for i, title in zip(row["item_ids"], row["titles"], strict=True)
        )
        assert row["scores"] == sorted(row["scores"], reverse=True)

"""D3/BIGRec CSV: import of an existing split (real and hand-made) and the export round trip."""

import time
from pathlib import Path

import pandas as pd
import pytest

from flowrec.data import prepare, write_prepared
from flowrec.data.d3_export import D3_COLUMNS, write_d3_csv
from flowrec.data.interop import import_d3
from flowrec.data.protocol import repeat_counts
from flowrec.data.settings import dataset_settings

CDS = Path(__file__).resolve().parents[3] / "shared" / "data" / "amazon2018-cds"


def test_import_published_cds_split():
    if not (CDS / "train.csv").exists():
        pytest.skip(f"{CDS} absent: the paper's published CDs split is not on this machine")
    start = time.perf_counter()
    items, splits, stats = import_d3(CDS, max_history=10, seed=42)
    elapsed = time.perf_counter() - start
    assert {name: t.num_rows for name, t in splits.items()} == {"train": 49251, "valid": 6156, "test": 6157}
    assert items.num_rows == 5841 and stats["items_sharing_a_title"] == 464
    assert elapsed < 20, f"import took {elapsed:.1f} s"
    test = pd.read_csv(CDS / "test.csv", nrows=1)
    first = splits["test"].slice(0, 1).to_pylist()[0]
    assert first["user"] == test["user_id"][0] and first["timestamp"] == test["timestamp"][0]
    assert first["history"] == eval(test["history_item_id"][0])  # noqa: S307 (a literal from a test file)
    assert items.column("title")[first["target"]].as_py() == test["item_title"][0]
    assert splits["train"].column("user").null_count == 49251  # the rebuilt train.csv has no user_id


def write_split(folder: Path, rows: dict[str, list[dict]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, split in rows.items():
        pd.DataFrame(split).to_csv(folder / f"{name}.csv", index=False)
    return folder


TITLE_ROWS = {
    "train": [
        {"history_item_title": "['Alpha']", "item_title": "Beta's"},
        {"history_item_title": "['Alpha', \"Beta's\"]", "item_title": "Gamma"},
    ],
    "valid": [{"history_item_title": "['Beta\\'s', 'Gamma']", "item_title": "Alpha"}],
    "test": [{"history_item_title": "['Gamma', 'Alpha']", "item_title": "NA"}],  # "NA" stays a title
}


def test_import_titles_only_builds_items_from_titles(tmp_path):
    items, splits, stats = import_d3(write_split(tmp_path, TITLE_ROWS), max_history=1, seed=0)
    titles = items.column("title").to_pylist()
    assert sorted(titles) == ["Alpha", "Beta's", "Gamma", "NA"]
    assert items.column("item_id").to_pylist() == [0, 1, 2, 3]
    named = [
        ([titles[i] for i in row["history"]], titles[row["target"]]) for row in splits["train"].to_pylist()
    ]
    assert named == [(["Alpha"], "Beta's"), (["Beta's"], "Gamma")]  # max_history=1 keeps the last
    assert splits["test"].column("user").to_pylist() == [None]
    assert splits["test"].column("timestamp").to_pylist() == [None]
    assert stats["samples"] == {"train": 2, "valid": 1, "test": 1}


def test_import_titles_with_items_tsv_maps_to_smallest_id(tmp_path):
    folder = write_split(tmp_path, TITLE_ROWS)
    (folder / "items.tsv").write_text("item_id\titem_title\n0\tGamma\n1\tAlpha\n2\tBeta's\n3\tAlpha\n4\tNA\n")
    items, splits, _ = import_d3(folder, max_history=10, seed=0)
    assert items.num_rows == 5
    assert (
        splits["valid"].to_pylist()[0]["history"] == [2, 0]
        and splits["valid"].column("target")[0].as_py() == 1
    )


def test_import_errors_name_file_line_and_column(tmp_path):
    rows = {
        **TITLE_ROWS,
        "valid": [*TITLE_ROWS["valid"], {"history_item_title": "['Alpha'", "item_title": "Gamma"}],
    }
    folder = write_split(tmp_path, rows)
    with pytest.raises(ValueError, match=r"valid\.csv:3: column history_item_title"):
        import_d3(folder, max_history=10, seed=0)
    (folder / "valid.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"valid\.csv"):
        import_d3(folder, max_history=10, seed=0)


def test_import_unknown_title_is_named(tmp_path):
    folder = write_split(tmp_path, TITLE_ROWS)
    (folder / "items.tsv").write_text("item_id\titem_title\n0\tGamma\n1\tAlpha\n2\tBeta's\n")
    with pytest.raises(ValueError, match=r"test\.csv:2: item_title 'NA' is no item"):
        import_d3(folder, max_history=10, seed=0)


def test_d3_export_round_trips_through_import(tmp_path):
    settings = dataset_settings({"source": "movielens", "window_start": "1998-03", "window_end": "1998-04"})
    from flowrec.data.movielens import movielens_files

    data = prepare(settings, movielens_files())
    out = {name: tmp_path / f"{name}.parquet" for name in ("items", "train", "valid", "test")}
    out |= {"stats": tmp_path / "stats.json"} | {
        f"d3_{n}": tmp_path / "d3" / f"{n}.csv" for n in ("train", "valid", "test")
    }
    write_prepared(data, out)
    frame = pd.read_csv(tmp_path / "d3" / "test.csv")
    assert list(frame.columns) == D3_COLUMNS
    assert len(frame) == data.stats["samples"]["test"]
    # Without items.tsv the importer rebuilds items from the (id, title) pairs: all ids must be targets
    # somewhere, which holds for a 5-core. Histories, targets, users and times come back unchanged.
    items, splits, _ = import_d3(tmp_path / "d3", max_history=settings.max_history, seed=0)
    assert items.column("title").to_pylist() == data.items.column("title").to_pylist()
    for name in ("train", "valid", "test"):
        cols = ["user", "history", "target", "timestamp"]
        assert splits[name].select(cols).to_pylist() == data.splits[name].select(cols).to_pylist()
        # and a second export writes the same file: ids, ratings, history timestamps all carried over
        write_d3_csv(splits[name], items, tmp_path / f"again_{name}.csv")
        assert (tmp_path / f"again_{name}.csv").read_text() == (tmp_path / "d3" / f"{name}.csv").read_text()


def test_published_cds_split_round_trips_through_import_and_export(tmp_path):
    """Every column the published files have (ASINs, ratings, history timestamps included) comes back."""
    if not (CDS / "train.csv").exists():
        pytest.skip(f"{CDS} absent: the paper's published CDs split is not on this machine")
    items, splits, stats = import_d3(CDS, max_history=10**6, seed=42)
    assert stats["warnings"] == {"train_duplicate_rows": 637, "test_duplicate_rows": 42}
    for name in ("train", "valid", "test"):
        write_d3_csv(splits[name], items, tmp_path / f"{name}.csv")
        given = pd.read_csv(CDS / f"{name}.csv", dtype=str, keep_default_na=False)
        exported = pd.read_csv(tmp_path / f"{name}.csv", dtype=str, keep_default_na=False)
        pd.testing.assert_frame_equal(exported[given.columns], given)


def test_published_cds_split_keeps_repeated_pairs():
    """The published split keeps repeated (user, item) pairs (datasets.*.repeats: keep): of its 12,313
    valid and test samples, 119 have their target in their own history and 711 an item twice in it.
    Our default protocol (repeats: drop) gives 0 and 0 (tests/unit/test_data_amazon.py)."""
    if not (CDS / "valid.csv").exists():
        pytest.skip(f"{CDS} absent: the paper's published CDs split is not on this machine")
    _, splits, _ = import_d3(CDS, max_history=10, seed=42)
    counts = [
        repeat_counts(splits[name].column("history").to_pylist(), splits[name].column("target").to_pylist())
        for name in ("valid", "test")
    ]
    assert splits["valid"].num_rows + splits["test"].num_rows == 12313
    assert {key: sum(c[key] for c in counts) for key in counts[0]} == {
        "target_in_history": 119,
        "repeated_history_item": 711,
    }

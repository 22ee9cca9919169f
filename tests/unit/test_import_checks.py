"""Bad imported splits: an error naming the file and line, or a warning counted in stats.json."""

from pathlib import Path

import pandas as pd
import pytest

from flowrec.data.interop import import_d3

ROWS = {
    "train": [
        {
            "user_id": "u1",
            "history_item_id": "[0]",
            "item_id": 1,
            "history_item_title": "['Alpha']",
            "item_title": "Beta",
            "timestamp": 10,
        },
        {
            "user_id": "u2",
            "history_item_id": "[1]",
            "item_id": 2,
            "history_item_title": "['Beta']",
            "item_title": "Gamma",
            "timestamp": 11,
        },
    ],
    "valid": [
        {
            "user_id": "u1",
            "history_item_id": "[0, 1]",
            "item_id": 2,
            "history_item_title": "['Alpha', 'Beta']",
            "item_title": "Gamma",
            "timestamp": 12,
        }
    ],
    "test": [
        {
            "user_id": "u2",
            "history_item_id": "[1, 2]",
            "item_id": 0,
            "history_item_title": "['Beta', 'Gamma']",
            "item_title": "Alpha",
            "timestamp": 13,
        }
    ],
}


def write(folder: Path, rows: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, split in rows.items():
        pd.DataFrame(split).to_csv(folder / f"{name}.csv", index=False)
    return folder


def changed(split: str, row: int, **values) -> dict:
    rows = {name: [dict(r) for r in split_rows] for name, split_rows in ROWS.items()}
    rows[split][row].update(values)
    return rows


def test_a_clean_split_imports_without_warnings(tmp_path):
    _, splits, stats = import_d3(write(tmp_path, ROWS), max_history=10, seed=0)
    assert stats["warnings"] == {} and splits["test"].num_rows == 1


@pytest.mark.parametrize("title", ["", "   "])
def test_empty_or_whitespace_title_is_an_error_naming_the_line(tmp_path, title):
    folder = write(tmp_path, changed("test", 0, item_title=title))
    with pytest.raises(ValueError, match=r"test\.csv:2: item_title is empty or whitespace"):
        import_d3(folder, max_history=10, seed=0)


def test_empty_history_title_is_an_error(tmp_path):
    rows = {
        n: [{k: v for k, v in r.items() if k not in ("history_item_id", "item_id")} for r in s]
        for n, s in ROWS.items()
    }
    rows["valid"][0]["history_item_title"] = "['Alpha', ' ']"
    with pytest.raises(ValueError, match=r"valid\.csv:2: history_item_title holds an empty"):
        import_d3(write(tmp_path, rows), max_history=10, seed=0)


def test_empty_title_in_items_tsv_names_its_line(tmp_path):
    folder = write(tmp_path, ROWS)
    (folder / "items.tsv").write_text("item_id\titem_title\n0\tAlpha\n1\t \n2\tGamma\n")
    with pytest.raises(ValueError, match=r"items\.tsv:3: item_title is empty"):
        import_d3(folder, max_history=10, seed=0)


def test_header_only_empty_and_non_utf8_files_are_named(tmp_path):
    folder = write(tmp_path, ROWS)
    (folder / "test.csv").write_text(",".join(ROWS["test"][0]) + "\n")
    with pytest.raises(ValueError, match=r"test\.csv: no samples \(a header line only\)"):
        import_d3(folder, max_history=10, seed=0)
    (folder / "test.csv").write_text("")
    with pytest.raises(ValueError, match=r"test\.csv: empty file"):
        import_d3(folder, max_history=10, seed=0)
    write(folder, ROWS)
    data = (folder / "valid.csv").read_bytes().replace(b"Gamma", b"G\xe4mma")
    (folder / "valid.csv").write_bytes(data)
    with pytest.raises(ValueError, match=r"valid\.csv:2: not UTF-8"):
        import_d3(folder, max_history=10, seed=0)


def test_test_rows_copied_into_train_are_an_error(tmp_path):
    rows = changed("train", 0)
    rows["train"].append(dict(ROWS["test"][0]))
    with pytest.raises(
        ValueError, match=r"test\.csv:2: 1 test rows .* also appear in .*train\.csv: the split leaks"
    ):
        import_d3(write(tmp_path, rows), max_history=10, seed=0)


def test_duplicates_and_disagreeing_history_titles_are_counted(tmp_path):
    rows = changed("valid", 0, history_item_title="['Alpha', 'Gamma']")  # ids say Alpha, Beta
    rows["train"].append(dict(ROWS["train"][1]))
    _, _, stats = import_d3(write(tmp_path, rows), max_history=10, seed=0)
    assert stats["warnings"] == {"train_duplicate_rows": 1, "valid_history_titles_differ_from_ids": 1}


def test_extra_list_of_the_wrong_length_is_an_error(tmp_path):
    rows = changed("test", 0, history_rating="[5.0]", rating=4.0)
    with pytest.raises(ValueError, match=r"test\.csv:2: column history_rating has 1 entries, the history 2"):
        import_d3(write(tmp_path, rows), max_history=10, seed=0)


def write_items_tsv(folder: Path) -> None:
    (folder / "items.tsv").write_text("item_id\titem_title\n0\tAlpha\n1\tBeta\n2\tGamma\n")


def with_history_id(split: str, value: int) -> dict:
    """Row 0 of `split` with its first history id replaced by `value` (the titles left as they are)."""
    ids = ROWS[split][0]["history_item_id"].strip("[]").split(", ")
    return changed(split, 0, history_item_id="[" + ", ".join([str(value), *ids[1:]]) + "]")


@pytest.mark.parametrize("split", ["train", "valid", "test"])
@pytest.mark.parametrize("column", ["item_id", "history_item_id"])
@pytest.mark.parametrize("value", [-3, -1, 3, 99])
def test_an_id_outside_items_tsv_is_an_error_naming_file_line_and_value(tmp_path, split, column, value):
    rows = changed(split, 0, item_id=value) if column == "item_id" else with_history_id(split, value)
    folder = write(tmp_path, rows)
    write_items_tsv(folder)
    with pytest.raises(
        ValueError,
        match=rf"{split}\.csv:2: {column} {value} is out of range \(expected 0\.\.2, the item ids of .*items\.tsv",
    ):
        import_d3(folder, max_history=10, seed=0)


@pytest.mark.parametrize("split", ["train", "valid", "test"])
@pytest.mark.parametrize("column", ["item_id", "history_item_id"])
def test_a_negative_id_is_an_error_without_items_tsv_too(tmp_path, split, column):
    rows = changed(split, 0, item_id=-3) if column == "item_id" else with_history_id(split, -3)
    with pytest.raises(ValueError, match=rf"{split}\.csv:2: {column} -3 is out of range"):
        import_d3(write(tmp_path, rows), max_history=10, seed=0)


def test_a_history_id_beyond_the_ids_the_files_give_is_an_error(tmp_path):
    """Without items.tsv the catalogue is the item_id values (0..2 here); a history cannot name item 3."""
    with pytest.raises(
        ValueError,
        match=r"train\.csv:2: history_item_id 3 is out of range \(expected 0\.\.2, the item ids of the item_id column",
    ):
        import_d3(write(tmp_path, with_history_id("train", 3)), max_history=10, seed=0)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"item_id": "1.5"}, r"test\.csv:2: item_id '1.5' is not an integer item id"),
        ({"item_id": "a"}, r"test\.csv:2: item_id 'a' is not an integer item id"),
        ({"history_item_id": "[1, 2.5]"}, r"test\.csv:2: history_item_id holds 2.5, not an integer item id"),
        (
            {"history_item_id": "[1, true]"},
            r"test\.csv:2: history_item_id holds True, not an integer item id",
        ),
    ],
)
def test_an_id_that_is_no_integer_is_an_error(tmp_path, values, message):
    folder = write(tmp_path, changed("test", 0, **values))
    write_items_tsv(folder)
    with pytest.raises(ValueError, match=message):
        import_d3(folder, max_history=10, seed=0)


def test_in_range_ids_with_items_tsv_import(tmp_path):
    folder = write(tmp_path, ROWS)
    write_items_tsv(folder)
    _, splits, _ = import_d3(folder, max_history=10, seed=0)
    assert splits["test"].column("target").to_pylist() == [0]

"""Protocol pieces (titles, window, split sizes, k-core) and MovieLens-100K loading."""

from collections import Counter

import pandas as pd
import pytest

from flowrec.data import prepare
from flowrec.data.movielens import load_movielens, movielens_files
from flowrec.data.protocol import clean_title, k_core, split_sizes, window_bounds
from flowrec.data.settings import dataset_settings


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Abbey Road &amp; More ", ("Abbey Road & More", None)),
        ("\"'Blue'\"", ("Blue", None)),
        ('<span class="a-size-medium a-color-secondary', (None, "title_html")),
        ("Bold &lt;b&gt;move&lt;/b&gt;", (None, "title_html")),  # markup hidden behind entities
        ("Love <3", ("Love <3", None)),  # a "<" that is no tag is fine
        ("X", (None, "title_too_short")),
        ('""', (None, "title_missing")),
        (None, (None, "title_missing")),
        (" ".join(["w"] * 4), ("w w w w", None)),
        (" ".join(["w"] * 5), (None, "title_too_long")),
    ],
)
def test_clean_title(raw, expected):
    assert clean_title(raw, 4, "flowrec") == expected


def test_window_bounds_are_month_starts_inclusive():
    settings = dataset_settings(
        {"source": "amazon", "category": "x", "window_start": "2015-10", "window_end": "2018-11"}
    )
    assert window_bounds(settings) == (1443657600, 1541030400)  # 2015-10-01 and 2018-11-01, 00:00 UTC
    assert window_bounds(dataset_settings({"source": "movielens"})) == (None, None)


def test_split_sizes_floor_train_and_valid():
    assert split_sizes(61564, [0.8, 0.1, 0.1], "flowrec") == (49251, 6156, 6157)  # the published CDs split
    assert split_sizes(10, [0.8, 0.1, 0.1], "flowrec") == (8, 1, 1)
    assert split_sizes(7, [3, 1, 1], "flowrec") == (4, 1, 2)


def test_published_split_sizes_cut_at_cumulative_shares():
    """The published script cuts at int(0.8 n) and int(0.9 n): the published files' row counts follow
    (Table 2 minus one first interaction per user = samples)."""
    shares = [0.8, 0.1, 0.1]
    assert split_sizes(69249 - 7685, shares, "published") == (49251, 6156, 6157)  # CDs
    assert split_sizes(70483 - 9066, shares, "published") == (49133, 6142, 6142)  # Games: valid 6142
    assert split_sizes(70483 - 9066, shares, "flowrec") == (49133, 6141, 6143)  # ours differs there
    assert split_sizes(31085 - 3663, shares, "published") == (21937, 2742, 2743)  # Movies
    assert split_sizes(19, shares, "published") == (15, 2, 2) and split_sizes(19, shares, "flowrec") == (
        15,
        1,
        3,
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Abbey Road &amp; More ", ("Abbey Road & More", None)),
        ("&quot;Blue&quot;", ("Blue", None)),  # &quot; unescaped, then the quotes stripped
        (" 'Blue' ", ("'Blue'", None)),  # single quotes stay
        ('" Blue "', (" Blue ", None)),  # spaces are stripped before the quotes, not after
        ("Rock &#39;n&#39; Roll &lt;3", ("Rock &#39;n&#39; Roll &lt;3", None)),  # other entities stay
        (
            '<span class="a-size-medium a-color-secondary',
            ('<span class="a-size-medium a-color-secondary', None),
        ),
        ('Album <span id="x">junk</span>', (None, "title_html")),
        ("X", (None, "title_too_short")),
        ('""', (None, "title_missing")),
        (None, (None, "title_missing")),
        ("w w w  w", (None, "title_too_long")),  # split on single spaces: five words (ours: four)
        ("w w w w", ("w w w w", None)),
    ],
)
def test_clean_title_published(raw, expected):
    assert clean_title(raw, 4, "published") == expected


def test_k_core_is_iterated_until_stable():
    # k=2. u3 has one interaction -> goes; then item c has one -> goes; then u2 has one -> goes.
    inter = pd.DataFrame(
        {
            "user": pd.Categorical(["u1", "u1", "u2", "u2", "u3", "u4", "u4"]),
            "item": pd.Categorical(["a", "b", "a", "c", "c", "a", "b"]),
        }
    )
    drops = Counter()
    kept = k_core(inter, 2, drops)
    assert sorted(zip(kept["user"], kept["item"], strict=True)) == [
        ("u1", "a"),
        ("u1", "b"),
        ("u4", "a"),
        ("u4", "b"),
    ]
    assert drops["k_core"] == 3


def test_movielens_titles_unique_except_true_duplicates():
    files = movielens_files()
    drops = Counter()
    inter, titles = load_movielens(files["inter"], files["item"], 20, drops)
    items = pd.read_csv(files["item"], sep="\t", dtype=str, keep_default_na=False)
    items.columns = [c.split(":")[0] for c in items.columns]
    items = items.set_index("item_id").loc[titles.index]
    shared = titles[titles.duplicated(keep=False)]
    # Every remaining shared title belongs to movies listed twice with the same title and year.
    assert len(shared) == 36  # 18 films MovieLens lists twice
    for title, group in shared.groupby(shared):
        pairs = items.loc[group.index, ["movie_title", "release_year"]].drop_duplicates()
        assert len(pairs) == 1, title
        assert title.endswith(f"({pairs['release_year'].iloc[0]})")
    assert titles["246"] == titles["268"] == "Chasing Amy (1997)"
    assert len(inter) + drops["item_no_title"] == 100000  # every rating is an interaction
    assert inter["timestamp"].dtype == "int64"


def test_movielens_window_applies():
    settings = dataset_settings({"source": "movielens", "window_start": "1998-03", "window_end": "1998-04"})
    data = prepare(settings, movielens_files())
    low, high = window_bounds(settings)
    for table in data.splits.values():
        stamps = table.column("timestamp").to_numpy()
        assert stamps.min() >= low and stamps.max() <= high
    stamps = [t.column("timestamp").to_numpy() for t in data.splits.values()]
    assert stamps[0].max() <= stamps[1].min() and stamps[1].max() <= stamps[2].min()  # split by time
    assert data.stats["users"] >= 30
    histories = data.splits["train"].column("history").to_pylist()
    assert max(map(len, histories)) == settings.max_history

"""Per-title counts and popularity groups (docs/method.md section 6) on hand-worked cases."""

import numpy as np
import pyarrow as pa
import pytest

from flowrec.groups import group_shares, popularity_groups, title_history_counts


def test_popularity_groups_by_hand() -> None:
    # titles 0..8; frequencies with ties and three zero-frequency titles
    freq = np.array([5, 0, 9, 1, 5, 0, 2, 7, 0])
    groups = popularity_groups(freq, 3)
    # seen titles by frequency desc, ties by id: 2(9) 7(7) 0(5) 4(5) 6(2) 3(1) -> cut 2/2/2
    # unseen 1, 5, 8 -> last group, which therefore has 5 titles
    assert groups.tolist() == [1, 2, 0, 2, 1, 2, 2, 0, 2]
    shares = group_shares(freq, groups, 3)
    assert np.allclose(shares, [16 / 29, 10 / 29, 3 / 29])
    # with 7 seen titles and 3 groups np.array_split gives 3/2/2
    assert np.bincount(popularity_groups(np.array([1, 2, 3, 4, 5, 6, 7, 0]), 3)).tolist() == [3, 2, 3]


def test_title_history_counts_accepts_arrow_and_lists() -> None:
    item_title = np.array([0, 1, 1, 2])
    lists = [[0, 1], [2, 3, 2], []]
    arrow = pa.chunked_array([pa.array(lists, type=pa.list_(pa.int64()))])
    assert title_history_counts(lists, item_title, 4).tolist() == [1, 3, 1, 0]
    assert title_history_counts(arrow, item_title, 4).tolist() == [1, 3, 1, 0]
    with pytest.raises(ValueError, match="item ids"):
        title_history_counts([[7]], item_title, 4)

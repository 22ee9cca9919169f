"""The trie: structure, flows and process rewards by hand, torch side against brute force, persistence,
and the contract that every training target is a trie path."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from flowrec.prompts import sample_ids, split_token_ids, title_ids, title_ids_batch
from flowrec.stages.build_trie import build, read_item_titles
from flowrec.trie import Trie, build_trie

REPO = Path(__file__).resolve().parents[2]

# A fake tokenizer: one id per word, then "\n" (7) and EOS (8), as prompts.title_ids terminates titles.
WORDS = {"Back": 1, "to": 2, "the": 3, "Future": 4, "II": 5, "Jaws": 6}
NEWLINE, EOS = 7, 8


def fake_ids(title: str) -> list[int]:
    return [WORDS[w] for w in title.split()] + [NEWLINE, EOS]


@pytest.fixture()
def hand_trie() -> Trie:
    # items 0..4; items 1 and 3 share "Jaws"; "Back" never occurs in histories (R = 0)
    items = ["Back to the Future", "Jaws", "Back to the Future II", "Jaws", "Back"]
    rewards = {"Back to the Future": 3, "Back to the Future II": 1, "Jaws": 4, "Back": 0}
    return Trie.build(items, fake_ids, rewards)


def walk(trie: Trie, ids: list[int]) -> int:
    node = torch.zeros(1, dtype=torch.long)
    for token in ids:
        node = trie.step(node, torch.tensor([token]))
    return int(node)


def test_hand_trie_structure_and_process_rewards(hand_trie: Trie) -> None:
    t = hand_trie
    # DFS order = token order: "Back to the Future II" ([1,2,3,4,5,..]) before "Back to the Future" ([1,2,3,4,7,..])
    assert t.titles == ["Back to the Future II", "Back to the Future", "Back", "Jaws"]
    assert t.item_title.tolist() == [1, 3, 0, 3, 2]
    assert t.n_titles == 4 and t.n_nodes == 15
    assert np.array_equal(t.title_reward, [1.0, 3.0, 0.0, 4.0])
    assert t.flow[0] == 8.0  # F(root) = total reward

    def edge(prefix: list[int], token: int) -> float:
        return float(t.edge_log_reward_of(torch.tensor([walk(t, prefix)]), torch.tensor([token])))

    # hand values: R_p(s, a) = F(s + a) / F(s)
    assert math.isclose(edge([], 1), math.log(4 / 8))  # "Back...": 3 + 1 + 0 of 8
    assert math.isclose(edge([], 6), math.log(4 / 8))  # "Jaws"
    assert math.isclose(edge([1], 2), math.log(4 / 4))  # "Back" -> "to": all of Back's flow
    assert edge([1], NEWLINE) == -math.inf  # "Back" ends: zero reward, no flow
    assert math.isclose(edge([1, 2, 3, 4], NEWLINE), math.log(3 / 4))  # prefix title ends
    assert math.isclose(edge([1, 2, 3, 4], 5), math.log(1 / 4))  # ... or continues with "II"
    assert math.isclose(edge([1, 2, 3, 4, NEWLINE], EOS), 0.0)
    assert edge([1], 6) == -math.inf  # no such edge
    # the product of process rewards along a path is R(i) / F(root)
    path = fake_ids("Back to the Future")
    nodes = t.path_nodes(torch.tensor([path]))[0]
    total = t.edge_log_reward_of(torch.cat([torch.tensor([0]), nodes[:-1]]), torch.tensor(path)).sum()
    assert math.isclose(float(total), math.log(3 / 8))
    assert t.is_leaf(nodes).tolist() == [False] * (len(path) - 1) + [True]
    assert int(t.title_of(nodes[-1:])) == 1
    # state flows for the loss: log F along the path
    assert torch.allclose(
        t.state_log_flows(nodes[:4]), torch.log(torch.tensor([4.0, 4.0, 4.0, 4.0], dtype=torch.float64))
    )
    assert float(t.state_log_flows(torch.tensor([-1]))) == -math.inf
    # numpy side agrees with the torch side
    assert np.allclose(np.exp(t.edge_log_reward[t.child_ptr[0] : t.child_ptr[1]]), [0.5, 0.5])


def test_real_tokenizer_prefix_titles(tokenizer) -> None:
    items = ["Back to the Future (1985)", "Back to the Future Part II (1989)", "Heat (1995)", "Nadja (1994)"]
    histories = [[0, 0, 1], [2, 0]]  # Back to the Future x3, Part II x1, Heat x1, Nadja x0
    trie = build_trie(items, tokenizer, histories)
    reward = {trie.titles[i]: r for i, r in enumerate(trie.title_reward)}
    assert reward == {items[0]: 3.0, items[1]: 1.0, items[2]: 1.0, items[3]: 0.0}
    for title in items:
        ids = title_ids(tokenizer, title)
        assert ids[-1] == tokenizer.eos_token_id
        leaf = walk(trie, ids)
        assert leaf >= 0 and trie.titles[int(trie.node_title[leaf])] == title
        nodes = trie.path_nodes(torch.tensor([ids]))[0]
        prev = torch.cat([torch.tensor([0]), nodes[:-1]])
        log_r = float(trie.edge_log_reward_of(prev, torch.tensor(ids)).sum())
        expected = math.log(reward[title] / 5) if reward[title] else -math.inf
        assert log_r == pytest.approx(expected)


def random_trie(seed: int, n_items: int = 60, vocab: int = 12) -> tuple[Trie, list[list[int]]]:
    rng = np.random.default_rng(seed)
    paths: dict[tuple[int, ...], None] = {}
    while len(paths) < n_items // 2:
        body = tuple(int(x) for x in rng.integers(0, vocab - 2, size=rng.integers(1, 5)))
        paths[body + (vocab - 2, vocab - 1)] = None  # every path ends with "newline, EOS"
    names = [f"t{i}" for i in range(len(paths))]
    ids = dict(zip(names, (list(p) for p in paths), strict=True))
    items = [names[i] for i in rng.integers(0, len(names), size=n_items)]
    rewards = {n: float(r) for n, r in zip(names, rng.integers(0, 4, size=len(names)), strict=True)}
    return Trie.build(items, ids, rewards), [ids[n] for n in names]


def brute_children(trie: Trie) -> dict[int, dict[int, int]]:
    """node -> {token: child} from the title paths alone (prefix tuples), independent of the CSR."""
    prefix_node = {(): 0}
    for i in range(trie.n_titles):
        ids = trie.title_token_ids(i)
        for d in range(1, len(ids) + 1):
            prefix_node.setdefault(tuple(ids[:d]), walk(trie, ids[:d]))
    children: dict[int, dict[int, int]] = {n: {} for n in range(trie.n_nodes)}
    for prefix, node in prefix_node.items():
        if prefix:
            children[prefix_node[prefix[:-1]]][prefix[-1]] = node
    return children


@pytest.mark.parametrize("seed", [0, 1])
def test_torch_side_against_brute_force(seed: int) -> None:
    trie, _ = random_trie(seed)
    vocab = 12
    children = brute_children(trie)
    assert len(set(sum((list(c.values()) for c in children.values()), []))) == trie.n_nodes - 1
    flow = trie.flow
    nodes = torch.tensor([*range(trie.n_nodes), -1])
    mask = trie.allowed_mask(nodes, vocab)
    mask_flow = trie.allowed_mask(nodes, vocab, require_flow=True)
    for row, n in enumerate(nodes.tolist()):
        kids = children.get(n, {})
        assert set(torch.nonzero(mask[row]).flatten().tolist()) == set(kids)
        assert set(torch.nonzero(mask_flow[row]).flatten().tolist()) == {
            a for a, c in kids.items() if flow[c] > 0
        }
        # flow conservation: F(node) = sum of children (leaves: R of their title)
        if n >= 0 and kids:
            assert flow[n] == pytest.approx(sum(flow[c] for c in kids.values()))
    # step over every (node, token) pair at once
    nn, tt = torch.meshgrid(nodes, torch.arange(-1, vocab + 1), indexing="ij")
    got = trie.step(nn.reshape(-1), tt.reshape(-1)).tolist()
    want = [
        children.get(n, {}).get(a, -1)
        for n, a in zip(nn.reshape(-1).tolist(), tt.reshape(-1).tolist(), strict=True)
    ]
    assert got == want
    # children(): each row's edges packed left in token order, with the nodes they lead to
    for require_flow in (False, True):
        ids, child, valid = trie.children(nodes, require_flow=require_flow)
        for row, n in enumerate(nodes.tolist()):
            kids = {a: c for a, c in children.get(n, {}).items() if flow[c] > 0 or not require_flow}
            assert valid[row].tolist() == [k < len(kids) for k in range(valid.shape[1])]
            assert list(
                zip(ids[row][valid[row]].tolist(), child[row][valid[row]].tolist(), strict=True)
            ) == sorted(kids.items())
        want_log_r = [trie.node_log_reward[c] if c >= 0 else 0.0 for c in child.flatten().tolist()]
        assert trie.log_reward_into(child).flatten().tolist() == want_log_r
    # leaves are exactly the nodes without children, one per title
    leaves = trie.is_leaf(nodes[:-1])
    assert leaves.tolist() == [not children[n] for n in range(trie.n_nodes)]
    assert int(leaves.sum()) == trie.n_titles
    # subtree mass = brute-force sum over the titles whose path passes through the node
    scores = torch.rand(3, trie.n_titles, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    query = torch.tensor([[0, 1, trie.n_nodes - 1, -1]] * 3)
    mass = trie.subtree_mass(scores, query)
    for b in range(3):
        for k, n in enumerate(query[b].tolist()):
            below = [
                i
                for i in range(trie.n_titles)
                if n >= 0 and n in [0, *trie.path_nodes(torch.tensor([trie.title_token_ids(i)]))[0].tolist()]
            ]
            assert float(mass[b, k]) == pytest.approx(float(scores[b, below].sum()))


@pytest.mark.parametrize("seed", [0, 1])
def test_title_paths_sole_titles_and_forced_rests_against_brute_force(seed: int) -> None:
    """What the sampler reads a forced title tail from: each title's path nodes, the only (rewarded)
    title below a node, and the rest of a title's path from any node on it."""
    trie, _ = random_trie(seed)
    children = brute_children(trie)
    paths = [
        trie.path_nodes(torch.tensor([trie.title_token_ids(i)]))[0].tolist() for i in range(trie.n_titles)
    ]
    for i, path in enumerate(paths):
        assert trie.title_paths[i].tolist() == path + [-1] * (trie.title_paths.shape[1] - len(path))
    nodes = torch.tensor([*range(trie.n_nodes), -1])
    assert trie.child_count(nodes).tolist() == [len(children.get(n, {})) for n in nodes.tolist()]
    for require_flow in (False, True):
        sole = trie.sole_title(nodes, require_flow).tolist()
        for n, got in zip(nodes.tolist(), sole, strict=True):
            below = [i for i, p in enumerate(paths) if n == 0 or n in p] if n >= 0 else []
            if require_flow:
                below = [i for i in below if trie.title_reward[i] > 0]
            assert got == (below[0] if len(below) == 1 else -1), (n, require_flow)
    # the rest of title i's path from its k-th node
    titles = torch.arange(trie.n_titles)
    for k in range(3):
        start = torch.tensor([([0] + p)[min(k, len(p))] for p in paths])
        rest = trie.rest_of_titles(start, titles, 4)
        for i, p in enumerate(paths):
            tail = p[min(k, len(p)) :][:4]
            assert rest[i].tolist() == tail + [-1] * (4 - len(tail))
        assert trie.token_into(rest).tolist() == [
            [trie.node_token[n] if n >= 0 else -1 for n in row] for row in rest.tolist()
        ]


def test_save_load_round_trip(tmp_path: Path, hand_trie: Trie) -> None:
    hand_trie.save(tmp_path / "trie.npz")
    loaded = Trie.load(tmp_path / "trie.npz")
    assert loaded.titles == hand_trie.titles
    for name in ("child_ptr", "child_token", "child_node", "parent", "node_token", "depth", "node_title"):
        assert np.array_equal(getattr(loaded, name), getattr(hand_trie, name)), name
    for name in ("leaf_start", "leaf_end", "title_ptr", "title_tokens", "title_reward", "item_title"):
        assert np.array_equal(getattr(loaded, name), getattr(hand_trie, name)), name
    assert np.array_equal(loaded.flow, hand_trie.flow)
    with np.load(tmp_path / "trie.npz", allow_pickle=False) as npz:
        assert np.array_equal(npz["flow"], hand_trie.flow)


def test_build_rejects_ambiguous_paths() -> None:
    with pytest.raises(ValueError, match="prefix"):
        Trie.build(["a", "b"], {"a": [1, 2], "b": [1, 2, 3]})
    with pytest.raises(ValueError, match="same token ids"):
        Trie.build(["a", "b"], {"a": [1, 2], "b": [1, 2]})


def write_split(folder: Path) -> None:
    """A small split in the canonical format (docs/formats.md), with shared and prefix titles."""
    titles = ["Back to the Future (1985)", "Back to the Future Part II (1989)", "Heat (1995)", "Heat (1995)",
              "Café Society", "L'Âge d'or (1930)", "Toy Story (1995)", "Nadja (1994)"]  # fmt: skip
    folder.mkdir(parents=True)
    pq.write_table(
        pa.table(
            {
                "item_id": np.arange(len(titles))[::-1].copy(),
                "title": titles[::-1],
                "source_id": [str(i) for i in range(len(titles))],
            }
        ),
        folder / "items.parquet",
    )
    rng = np.random.default_rng(0)
    for split, n in [("train", 30), ("valid", 5), ("test", 5)]:
        hist = [rng.integers(0, len(titles), size=rng.integers(0, 12)).tolist() for _ in range(n)]
        frame = pd.DataFrame(
            {
                "user": [f"u{i}" for i in range(n)],
                "history": hist,
                "target": rng.integers(0, len(titles), size=n),
                "timestamp": np.arange(n),
            }
        )
        schema = pa.schema(
            [
                ("user", pa.string()),
                ("history", pa.list_(pa.int64())),
                ("target", pa.int64()),
                ("timestamp", pa.int64()),
            ]
        )
        pq.write_table(
            pa.Table.from_pandas(frame, schema=schema, preserve_index=False), folder / f"{split}.parquet"
        )


def check_targets_are_trie_paths(data: Path, tokenizer, trie: Trie, prompt_rows: int | None = None) -> None:
    """Every split's training sequence = prompt ids + a trie path ending at the target's title leaf.

    Targets: all rows. Prompt + target concatenation: the first `prompt_rows` rows (None: all).
    """
    item_titles = read_item_titles(data / "items.parquet")
    for split in ("train", "valid", "test"):
        frame = pq.read_table(data / f"{split}.parquet").to_pandas()
        targets_all = frame["target"].to_numpy()
        head = frame if prompt_rows is None else frame.iloc[:prompt_rows]
        prompts, targets = split_token_ids(
            tokenizer, head["history"], head["target"].to_numpy(), item_titles, 10
        )
        for prompt, target, item in zip(prompts, targets, head["target"], strict=True):
            ids, n_prompt = sample_ids(prompt, target)  # what the trainers feed the model
            assert ids[n_prompt:] == target == title_ids(tokenizer, item_titles[item])
            assert trie.title_token_ids(int(trie.item_title[item])) == target
        # every target (all rows): its title's ids, walked through the trie, end at that title's leaf
        unique = np.unique(targets_all)
        paths = title_ids_batch(tokenizer, [item_titles[i] for i in unique])
        width = max(len(t) for t in paths)
        padded = torch.tensor([t + [-1] * (width - len(t)) for t in paths])
        ends = trie.path_nodes(padded)[torch.arange(len(paths)), torch.tensor([len(t) - 1 for t in paths])]
        assert np.array_equal(trie.title_of(ends).numpy(), trie.item_title[unique]), split
        assert np.all(np.isin(targets_all, unique))


def test_generated_split_targets_are_trie_paths(tmp_path: Path, tokenizer) -> None:
    data = tmp_path / "data"
    write_split(data)
    trie, table, groups_json = build(data / "items.parquet", data / "train.parquet", "tiny-random", 3)
    assert trie.n_items == 8 and trie.n_titles == 7  # items 2 and 3 share "Heat (1995)"
    assert table.column("title").to_pylist() == trie.titles
    assert sum(groups_json["shares"]) == pytest.approx(1.0)
    check_targets_are_trie_paths(data, tokenizer, trie)


def test_build_refuses_more_groups_than_the_catalogue_fills(tmp_path: Path) -> None:
    """7 titles: 8 groups cannot all hold one; the stage names the key, the counts and its input files."""
    data = tmp_path / "data"
    write_split(data)
    with pytest.raises(
        ValueError,
        match=r"train.parquet: trie.n_groups: 8 popularity groups, but only \d of the catalogue's 7 titles",
    ):
        build(data / "items.parquet", data / "train.parquet", "tiny-random", 8)


@pytest.mark.slow
def test_ml100k_targets_are_trie_paths(tmp_path: Path, tokenizer) -> None:
    """The whole of MovieLens-100K (the embedded default's data stage, settings of config.yaml)."""
    from flowrec.data import prepare, write_prepared
    from flowrec.data.movielens import movielens_files
    from flowrec.data.settings import dataset_settings

    block = yaml.safe_load((REPO / "config.yaml").read_text())["datasets"]["ml100k"]
    data = tmp_path / "data"
    out = {name: data / f"{name}.parquet" for name in ("items", "train", "valid", "test")}
    out |= {"stats": data / "stats.json"} | {
        f"d3_{n}": data / f"d3/{n}.csv" for n in ("train", "valid", "test")
    }
    write_prepared(prepare(dataset_settings(block, "ml100k"), movielens_files()), out)
    trie, _, _ = build(data / "items.parquet", data / "train.parquet", "tiny-random", 8)
    check_targets_are_trie_paths(data, tokenizer, trie, prompt_rows=500)

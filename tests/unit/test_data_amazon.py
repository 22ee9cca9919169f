"""Amazon 2018 parsing and the protocol on a hand-made fixture; the resumable download."""

import gzip
import hashlib
import json
import logging
import random
import socket
import threading
import urllib.error
import urllib.request
from collections import Counter
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from flowrec.data import prepare
from flowrec.data.amazon import amazon_urls, download_file, read_meta_titles, read_reviews
from flowrec.data.settings import dataset_settings
from flowrec.stages.download_amazon import download_amazon

LOW = 1514764800  # 2018-01-01 00:00 UTC = start of window_start "2018-01"
HIGH = 1519862400  # 2018-03-01 00:00 UTC = start of window_end "2018-03" (inclusive)


def day(n: int) -> int:
    return LOW + n * 86400


META = [
    {"asin": "A1", "title": "Alpha"},
    {"asin": "A2", "title": "  Beta &amp; Gamma "},  # unescaped and stripped
    {"asin": "A3", "title": '"Gamma"'},  # quotes stripped
    {"asin": "A4", "title": '<span class="a-size-medium a-color-secondary a-text-normal'},  # junk markup
    {"asin": "A5", "title": " ".join(["word"] * 21)},  # over max_title_words = 20
    {"asin": "A6", "title": "Delta"},
    {"asin": "A7", "title": "X"},  # one character
    '{"asin": "A8", "title": ',  # malformed line (line 8)
    {"asin": "A9"},  # no title
    {"asin": "A1", "title": "Other"},  # duplicate asin: the first title stays
    {"asin": "A10", "title": "Epsilon"},
]

REVIEWS = [
    {"reviewerID": "u1", "asin": "A10", "unixReviewTime": LOW, "overall": 5.0},  # on the lower bound: kept
    {"reviewerID": "u1", "asin": "A1", "unixReviewTime": day(1), "overall": 4.0},
    {"reviewerID": "u1", "asin": "A2", "unixReviewTime": day(2), "overall": 3.0},
    {"reviewerID": "u1", "asin": "A3", "unixReviewTime": day(3), "overall": 2.0},
    {"reviewerID": "u1", "asin": "A5", "unixReviewTime": day(13), "overall": 5.0},  # item title too long
    {"reviewerID": "u1", "asin": "A99", "unixReviewTime": day(14), "overall": 5.0},  # no metadata
    {"reviewerID": "u2", "asin": "A1", "unixReviewTime": day(4), "overall": 5.0},
    {"reviewerID": "u2", "asin": "A2", "unixReviewTime": day(5), "overall": 5.0},
    {"reviewerID": "u2", "asin": "A2", "unixReviewTime": day(6), "overall": 1.0},  # repeat: earliest kept
    {"reviewerID": "u2", "asin": "A10", "unixReviewTime": LOW - 1, "overall": 5.0},  # before the window
    {"reviewerID": "u2", "asin": "A10", "unixReviewTime": HIGH + 1, "overall": 5.0},  # after the window
    {"reviewerID": "u3", "asin": "A2", "unixReviewTime": day(7), "overall": 5.0},
    {"reviewerID": "u3", "asin": "A3", "unixReviewTime": day(8), "overall": 5.0},
    {"reviewerID": "u3", "asin": "A1", "unixReviewTime": day(8), "overall": 5.0},  # same time: file order
    {"reviewerID": "u3", "asin": "A10", "unixReviewTime": HIGH, "overall": 5.0},  # on the upper bound: kept
    # k-core cascade (k=2): u5 has one usable review (A4 has a junk title) -> u5 goes; then A6 has one
    # review -> A6 goes; then u4 has one -> u4 goes. Neither u4 nor A6 is below k at the start.
    {"reviewerID": "u4", "asin": "A6", "unixReviewTime": day(9), "overall": 5.0},
    {"reviewerID": "u4", "asin": "A1", "unixReviewTime": day(10), "overall": 5.0},
    {"reviewerID": "u5", "asin": "A6", "unixReviewTime": day(11), "overall": 5.0},
    {"reviewerID": "u5", "asin": "A4", "unixReviewTime": day(12), "overall": 5.0},
    "not json at all",  # malformed line (line 20)
    {"reviewerID": "u1", "asin": "A1"},  # no unixReviewTime
]


def write_jsonl_gz(path, rows) -> str:
    with gzip.open(path, "wt", encoding="utf-8") as out:
        for row in rows:
            out.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return str(path)


@pytest.fixture
def amazon_files(tmp_path):
    return {
        "reviews": write_jsonl_gz(tmp_path / "Toy.json.gz", REVIEWS),
        "meta": write_jsonl_gz(tmp_path / "meta_Toy.json.gz", META),
    }


SETTINGS = dict(
    source="amazon",
    category="Toy",
    window_start="2018-01",
    window_end="2018-03",
    k_core=2,
    max_history=2,
    split=[0.6, 0.2, 0.2],
    seed=3,
)


def test_fixture_gives_hand_worked_items_samples_and_split(amazon_files, caplog):
    with caplog.at_level(logging.WARNING, logger="flowrec"):
        data = prepare(dataset_settings(SETTINGS), amazon_files)
    # Sorted source ids A1, A10, A2, A3; default_rng(3).permutation(4) orders them A3, A2, A10, A1.
    assert data.items.to_pydict() == {
        "item_id": [0, 1, 2, 3],
        "title": ["Gamma", "Beta & Gamma", "Epsilon", "Alpha"],
        "source_id": ["A3", "A2", "A10", "A1"],
    }
    # A3=0, A2=1, A10=2, A1=3. u1: A10 A1 A2 A3; u2: A1 A2; u3: A2 A3 A1 (tie, file order) A10.
    # 7 samples sorted by target time; [0.6, 0.2, 0.2] -> floor(4.2)=4 / floor(1.4)=1 / rest 2.
    cols = ["user", "history", "target", "timestamp"]
    assert data.splits["train"].select(cols).to_pylist() == [
        {"user": "u1", "history": [2], "target": 3, "timestamp": day(1)},
        {"user": "u1", "history": [2, 3], "target": 1, "timestamp": day(2)},
        {"user": "u1", "history": [3, 1], "target": 0, "timestamp": day(3)},
        {"user": "u2", "history": [3], "target": 1, "timestamp": day(5)},
    ]
    assert data.splits["valid"].select(cols).to_pylist() == [
        {"user": "u3", "history": [1], "target": 0, "timestamp": day(8)},
    ]
    assert data.splits["test"].select(cols).to_pylist() == [
        {"user": "u3", "history": [1, 0], "target": 3, "timestamp": day(8)},
        {"user": "u3", "history": [0, 3], "target": 2, "timestamp": HIGH},
    ]
    assert data.splits["train"].column("rating").to_pylist() == [4.0, 3.0, 2.0, 5.0]  # earliest u2/A2 kept
    stats = data.stats
    assert (stats["users"], stats["items"], stats["interactions"]) == (3, 4, 10)
    assert stats["samples"] == {"train": 4, "valid": 1, "test": 2}
    assert stats["dropped"] == {
        "meta_malformed_line": 1,
        "meta_title_missing": 1,
        "meta_duplicate_asin": 1,
        "meta_title_html": 1,
        "meta_title_too_long": 1,
        "meta_title_too_short": 1,
        "review_malformed_line": 1,
        "review_missing_field": 1,
        "outside_window": 2,
        "review_item_title_dropped": 2,
        "review_item_no_metadata": 1,
        "duplicate_user_item": 1,
        "k_core": 3,
    }
    assert f"{amazon_files['meta']}:8: skipped malformed line" in caplog.text
    assert f"{amazon_files['reviews']}:20: skipped malformed line" in caplog.text
    assert f"{amazon_files['reviews']}:21: missing or invalid unixReviewTime" in caplog.text


def test_same_seed_same_split_other_seed_other_ids(amazon_files):
    first = prepare(dataset_settings(SETTINGS), amazon_files)
    again = prepare(dataset_settings(SETTINGS), amazon_files)
    other = prepare(dataset_settings({**SETTINGS, "seed": 4}), amazon_files)
    for name in ("train", "valid", "test"):
        assert first.splits[name].equals(again.splits[name])
    assert first.items.equals(again.items)
    assert first.items.column("source_id").to_pylist() != other.items.column("source_id").to_pylist()


def test_window_or_k_core_that_empties_the_data_names_the_settings(amazon_files):
    with pytest.raises(ValueError, match="k_core"):
        prepare(dataset_settings({**SETTINGS, "k_core": 50}), amazon_files)
    with pytest.raises(ValueError, match="window"):
        prepare(
            dataset_settings({**SETTINGS, "window_start": "2019-01", "window_end": "2019-02"}),
            amazon_files,
        )


def test_unknown_setting_is_named():
    with pytest.raises(ValueError, match="kcore"):
        dataset_settings({**SETTINGS, "kcore": 5}, "toy")


def test_reviews_are_streamed_not_listed(amazon_files, monkeypatch):
    """Memory bound by design: the parser pulls lines from the gzip stream one at a time."""
    pulled = []
    real_open = gzip.open

    def spy_open(*args, **kwargs):
        stream = real_open(*args, **kwargs)
        assert not hasattr(stream, "__len__")

        def lines():
            for line in stream:
                pulled.append(1)
                yield line

        class Stream:
            def __enter__(self):
                return lines()

            def __exit__(self, *exc):
                stream.close()

        return Stream()

    monkeypatch.setattr(gzip, "open", spy_open)
    frame = read_reviews(amazon_files["reviews"], {"A1": "Alpha"}, set(), Counter())
    assert len(pulled) == len(REVIEWS) and len(frame) == 4


# ---- resumable download against a local HTTP server ----


class _Handler(BaseHTTPRequestHandler):
    def __init__(self, *args, payload: bytes, log: list, **kwargs):
        self.payload, self.requests = payload, log
        super().__init__(*args, **kwargs)

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.requests.append(self.headers.get("Range"))
        start = int(self.headers["Range"][6:-1]) if self.headers.get("Range") else 0
        if start >= len(self.payload):
            self.send_error(416)
            return
        body = self.payload[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(self.payload) - 1}/{len(self.payload)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if len(self.requests) == 1:  # first request: drop the connection halfway
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def serve():
    servers = []

    def start(payload: bytes):
        requests: list = []
        server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, payload=payload, log=requests))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/file.json.gz", requests

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_download_resumes_after_a_dropped_connection(serve, tmp_path):
    payload = gzip.compress(b"".join(json.dumps({"asin": f"B{i}"}).encode() + b"\n" for i in range(20000)))
    url, requests = serve(payload)
    dest = tmp_path / "raw" / "Toy.json.gz"
    download_file(url, dest, sha256=hashlib.sha256(payload).hexdigest(), backoff_s=0.01)
    assert dest.read_bytes() == payload
    assert requests[0] is None and requests[1] == f"bytes={len(payload) // 2}-"
    assert not (tmp_path / "raw" / "Toy.json.gz.part").exists()


@pytest.mark.parametrize("kind", ["not_gzip", "truncated_gzip", "wrong_sha256"])
def test_download_rejects_a_bad_file_and_leaves_no_final_file(serve, tmp_path, kind):
    whole = gzip.compress(b'{"asin": "B1"}\n' * 5000)
    payload = {"not_gzip": b"<html>Not Found</html>" * 100, "truncated_gzip": whole[: len(whole) - 40]}.get(
        kind, whole
    )
    url, _ = serve(payload)
    dest = tmp_path / "Toy.json.gz"
    with pytest.raises(
        ValueError, match="sha256" if kind == "wrong_sha256" else "not a complete gzip"
    ) as err:
        download_file(url, dest, sha256="0" * 64 if kind == "wrong_sha256" else None, backoff_s=0.01)
    assert url in str(err.value)
    assert not dest.exists() and not (tmp_path / "Toy.json.gz.part").exists()


def test_widen_window_moves_the_start_back_a_year_while_items_are_few(amazon_files):
    data = prepare(dataset_settings({**SETTINGS, "widen_window_min_items": 5}), amazon_files)
    # 4 items < 5: start 2018-01 -> 2017-01, which takes in u2's A10 of 2017-12-31; still 4 items,
    # but the data start no earlier than 2017-12, so widening stops there.
    assert data.stats["window"] == {"start": "2017-01", "end": "2018-03"}
    assert data.stats["interactions"] == 11 and data.stats["dropped"]["outside_window"] == 1
    off = prepare(dataset_settings(SETTINGS), amazon_files)
    assert off.stats["window"]["start"] == "2018-01"


def test_download_resumes_from_a_complete_part_file_of_an_earlier_run(serve, tmp_path):
    payload = gzip.compress(b'{"asin": "B1"}\n' * 100)
    url, requests = serve(payload)
    dest = tmp_path / "Toy.json.gz"
    (tmp_path / "Toy.json.gz.part").write_bytes(payload)  # the earlier run died before verifying
    download_file(url, dest, backoff_s=0.01)
    assert dest.read_bytes() == payload and requests == [f"bytes={len(payload)}-"]


def test_non_utf8_titles_are_counted_and_a_broken_gzip_is_named(amazon_files, tmp_path):
    """Bytes that are not UTF-8 are replaced and counted in stats.json warnings; a file that is not
    gzip, or ends early, raises naming the file."""
    lines = gzip.open(amazon_files["meta"], "rb").read().split(b"\n")
    lines[0] = lines[0].replace(b'"title": "', b'"title": "\xff', 1)
    with gzip.open(amazon_files["meta"], "wb") as out:
        out.write(b"\n".join(lines))
    data = prepare(dataset_settings(SETTINGS), amazon_files)
    assert data.stats["warnings"] == {"meta_non_utf8_line": 1}
    assert "meta_non_utf8_line" not in data.stats["dropped"]
    truncated = tmp_path / "cut" / "Toy.json.gz"
    truncated.parent.mkdir()
    truncated.write_bytes(Path(amazon_files["reviews"]).read_bytes()[:-20])
    with pytest.raises(ValueError, match=rf"{truncated}: not a complete gzip file"):
        prepare(dataset_settings(SETTINGS), {**amazon_files, "reviews": str(truncated)})
    truncated.write_text("<html>404</html>")
    with pytest.raises(ValueError, match=rf"{truncated}: not a complete gzip file, read up to line 0"):
        prepare(dataset_settings(SETTINGS), {**amazon_files, "reviews": str(truncated)})


def test_default_base_url_is_the_lab_host_and_builds_the_published_paths():
    urls = amazon_urls(dataset_settings(SETTINGS).base_url, "CDs_and_Vinyl")
    assert urls == {
        "reviews": "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2/categoryFiles/CDs_and_Vinyl.json.gz",
        "meta": "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2/metaFiles2/meta_CDs_and_Vinyl.json.gz",
    }


def _assert_names_host_and_settings(message: str, host: str) -> None:
    assert f"for host {host} " in message
    assert "datasets.<name>.base_url" in message and "datasets.<name>.raw_dir" in message


def test_a_tls_failure_fails_at_once_naming_the_host_and_the_settings(serve, tmp_path):
    """https:// to the local plain-HTTP server: it answers the ClientHello in clear text, so the
    handshake fails as it does against a host that refuses TLS."""
    url, requests = serve(gzip.compress(b"{}\n"))
    url = url.replace("http://", "https://")
    with pytest.raises(ValueError, match="the TLS handshake failed") as err:
        download_file(url, tmp_path / "Toy.json.gz", retries=3, backoff_s=30.0)  # a retry would take 30 s
    _assert_names_host_and_settings(str(err.value), "127.0.0.1")
    assert requests == [] and not (tmp_path / "Toy.json.gz").exists()


def test_an_unresolvable_host_fails_at_once_naming_the_host_and_the_settings(tmp_path, monkeypatch):
    def no_such_host(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, f"Name or service not known: {host}")

    calls: list = []
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: calls.append(a) or no_such_host(*a))
    url = "https://datarepo.invalid/mcauley_group/data/amazon_v2/categoryFiles/Toy.json.gz"
    with pytest.raises(ValueError, match=r"does not resolve \(DNS\)") as err:
        download_file(url, tmp_path / "Toy.json.gz", retries=3, backoff_s=30.0)
    _assert_names_host_and_settings(str(err.value), "datarepo.invalid")
    assert len(calls) == 1  # no retry
    # the download stage names the dataset's entry
    with pytest.raises(ValueError, match=r"set datasets\.cds\.base_url .* or datasets\.cds\.raw_dir"):
        download_amazon(str(tmp_path / "r.json.gz"), str(tmp_path / "m.json.gz"), {"category": "Toy"}, "cds")


def test_other_connection_errors_are_still_retried(tmp_path, monkeypatch):
    calls: list = []

    def refused(*args, **kwargs):
        calls.append(args)
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))

    monkeypatch.setattr(urllib.request, "urlopen", refused)
    with pytest.raises(ValueError, match="download incomplete after 3 attempts"):
        download_file("http://127.0.0.1:9/Toy.json.gz", tmp_path / "Toy.json.gz", retries=2, backoff_s=0.0)
    assert len(calls) == 3


# ---- the published preprocessing's protocol beside ours, on one fixture ----

META_PUBLISHED = [
    {"asin": "B1", "title": "Rock &amp; Roll"},  # both: "Rock & Roll"
    {"asin": "B2", "title": "Rock &#39;n&#39; Roll"},  # ours unescapes every entity, published only two
    {"asin": "B3", "title": " 'Blue' "},  # ours strips single quotes too
    {"asin": "B4", "title": '<span id="a">Junk</span>'},  # dropped by both
    {"asin": "B5", "title": '<span class="a-text-normal">Moon</span>'},  # published keeps it, ours drops
    {"asin": "B6", "title": "Six"},
]
REVIEWS_PUBLISHED = [  # u2 is the first user in the file
    {"reviewerID": "u2", "asin": "B1", "unixReviewTime": day(1), "overall": 5.0},
    {"reviewerID": "u2", "asin": "B2", "unixReviewTime": day(2), "overall": 4.0},
    {"reviewerID": "u2", "asin": "B1", "unixReviewTime": day(3), "overall": 3.0},  # a repeated pair
    {"reviewerID": "u2", "asin": "B3", "unixReviewTime": day(4), "overall": 2.0},
    {"reviewerID": "u1", "asin": "B2", "unixReviewTime": day(1), "overall": 5.0},
    {"reviewerID": "u1", "asin": "B3", "unixReviewTime": day(2), "overall": 5.0},
    {"reviewerID": "u1", "asin": "B2", "unixReviewTime": day(2), "overall": 1.0},  # repeat, tie: file order
    {"reviewerID": "u1", "asin": "B5", "unixReviewTime": day(5), "overall": 5.0},
    {"reviewerID": "u3", "asin": "B4", "unixReviewTime": day(3), "overall": 5.0},  # junk title: dropped
    {"reviewerID": "u3", "asin": "B1", "unixReviewTime": day(6), "overall": 5.0},
    {"reviewerID": "u3", "asin": "B5", "unixReviewTime": day(6), "overall": 5.0},
    {"reviewerID": "u3", "asin": "B2", "unixReviewTime": day(7), "overall": 5.0},
    {"reviewerID": "u4", "asin": "B3", "unixReviewTime": day(7), "overall": 5.0},  # k-core: B6, then u4
    {"reviewerID": "u4", "asin": "B6", "unixReviewTime": day(8), "overall": 5.0},
]
PUBLISHED_PROTOCOL = {"repeats": "keep", "title_cleaning": "published", "ordering": "published"}


@pytest.fixture
def published_files(tmp_path):
    return {
        "reviews": write_jsonl_gz(tmp_path / "Pub.json.gz", REVIEWS_PUBLISHED),
        "meta": write_jsonl_gz(tmp_path / "meta_Pub.json.gz", META_PUBLISHED),
    }


def _rows_as_titles(data) -> dict[str, list[tuple]]:
    """Each split as (user, history titles, target title, timestamp): independent of the item ids."""
    title = data.items.column("title").to_pylist()
    return {
        name: [
            (r["user"], [title[i] for i in r["history"]], title[r["target"]], r["timestamp"]) for r in rows
        ]
        for name, rows in ((n, t.to_pylist()) for n, t in data.splits.items())
    }


def test_published_protocol_keeps_repeats_and_cleans_titles_as_published(published_files):
    settings = {**SETTINGS, "category": "Pub", "k_core": 2, "max_history": 3, "split": [0.5, 0.25, 0.25]}
    data = prepare(dataset_settings({**settings, **PUBLISHED_PROTOCOL}), published_files)
    # Kept: B1, B2, B3, B5 (B4 `<span id`; B6 has one review, then u4 has one). Per user by time:
    # u2: B1 B2 B1 B3; u1: B2 B3 B2 B5 (B3 and the second B2 share day 2: file order); u3: B1 B5 B2.
    rock, rock39, blue, moon = (
        "Rock & Roll",
        "Rock &#39;n&#39; Roll",
        "'Blue'",
        '<span class="a-text-normal">Moon</span>',
    )
    # 8 samples by target time; day 2 holds u2's first and u1's first two: u2 first (first in the file).
    # [0.5, 0.25, 0.25] of 8 -> cut points 4 and 6.
    assert _rows_as_titles(data) == {
        "train": [
            ("u2", [rock], rock39, day(2)),
            ("u1", [rock39], blue, day(2)),
            ("u1", [rock39, blue], rock39, day(2)),  # the target in its own history
            ("u2", [rock, rock39], rock, day(3)),  # again
        ],
        "valid": [
            ("u2", [rock, rock39, rock], blue, day(4)),  # a repeated history item
            ("u1", [rock39, blue, rock39], moon, day(5)),
        ],
        "test": [("u3", [rock], moon, day(6)), ("u3", [rock, moon], rock39, day(7))],
    }
    # Item ids: the items in order of first kept review (B1 B2 B3 B5), shuffled by Python's random(seed).
    first_seen = ["B1", "B2", "B3", "B5"]
    random.Random(SETTINGS["seed"]).shuffle(first_seen)
    assert data.items.column("source_id").to_pylist() == first_seen
    stats = data.stats
    assert (stats["users"], stats["items"], stats["interactions"]) == (3, 4, 11)
    assert "duplicate_user_item" not in stats["dropped"] and stats["dropped"]["meta_title_html"] == 1
    assert stats["repeats"] == {
        "train": {"target_in_history": 2, "repeated_history_item": 0},
        "valid": {"target_in_history": 0, "repeated_history_item": 2},
        "test": {"target_in_history": 0, "repeated_history_item": 0},
    }


def test_default_protocol_on_the_same_fixture_is_ours(published_files):
    settings = {**SETTINGS, "category": "Pub", "k_core": 2, "max_history": 3, "split": [0.5, 0.25, 0.25]}
    data = prepare(dataset_settings(settings), published_files)
    # Repeats dropped (u2's second B1, u1's second B2), B5 dropped as markup. k-core 2: B6 (1) goes,
    # then u4 (1). Left: u2 B1 B2 B3; u1 B2 B3; u3 B1 B2.
    rock, rock_n, blue = "Rock & Roll", "Rock 'n' Roll", "Blue"
    # 4 samples; on day 2 u1 comes before u2 (users by name); [0.5, 0.25, 0.25] of 4 -> 2 / 1 / 1.
    assert _rows_as_titles(data) == {
        "train": [("u1", [rock_n], blue, day(2)), ("u2", [rock], rock_n, day(2))],
        "valid": [("u2", [rock, rock_n], blue, day(4))],
        "test": [("u3", [rock], rock_n, day(7))],
    }
    ordered = np.array(["B1", "B2", "B3"], dtype=object)[
        np.random.default_rng(SETTINGS["seed"]).permutation(3)
    ]
    assert data.items.column("source_id").to_pylist() == list(ordered)
    assert (data.stats["users"], data.stats["items"], data.stats["interactions"]) == (3, 3, 7)
    assert data.stats["dropped"]["duplicate_user_item"] == 2 and "repeats" not in data.stats


def test_published_metadata_takes_an_asins_last_title_and_drops_it_if_any_row_is_rejected(tmp_path):
    meta = write_jsonl_gz(
        tmp_path / "meta.json.gz",
        [
            {"asin": "C1", "title": "Seven"},
            {"asin": "C1", "title": "Seven Remastered"},
            {"asin": "C2", "title": "Eight"},
            {"asin": "C2", "title": '<span id="x">'},
        ],
    )
    ours = read_meta_titles(meta, 20, Counter(), "flowrec")
    published = read_meta_titles(meta, 20, Counter(), "published")
    assert ours == ({"C1": "Seven", "C2": "Eight"}, set())
    assert published == ({"C1": "Seven Remastered"}, {"C2"})


def test_protocol_settings_are_checked():
    with pytest.raises(ValueError, match=r"datasets.dataset.repeats: 'some'.*\('drop', 'keep'\)"):
        dataset_settings({**SETTINGS, "repeats": "some"})
    with pytest.raises(ValueError, match="datasets.dataset.title_cleaning: published is the published"):
        dataset_settings({"source": "movielens", "title_cleaning": "published"})

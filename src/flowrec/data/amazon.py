"""Amazon Review Data 2018 (McAuley lab): resumable download and streaming parse (docs/method.md
section 2).

Files are gzip JSON lines; CDs_and_Vinyl alone has ~4.5 M reviews, so nothing here holds a file's
lines in a list: metadata becomes one dict asin -> clean title, reviews become compact integer
columns (user code, item code, timestamp, rating) in `array` buffers, so memory grows with the
number of kept reviews (~25 bytes each) plus the distinct user and item ids.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import logging
import os
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from array import array
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from flowrec.data.protocol import clean_title

log = logging.getLogger("flowrec.data")
MAX_LOGGED = 20  # malformed lines logged one by one (file:line); the rest only counted
_CHUNK = 1 << 20


def amazon_urls(base_url: str, category: str) -> dict[str, str]:
    """{"reviews": .../categoryFiles/{category}.json.gz, "meta": .../metaFiles2/meta_{category}.json.gz}."""
    base = base_url.rstrip("/")
    return {
        "reviews": f"{base}/categoryFiles/{category}.json.gz",
        "meta": f"{base}/metaFiles2/meta_{category}.json.gz",
    }


def unreachable_host(url: str, err: BaseException, block: str = "datasets.<name>") -> str | None:
    """The message for a download that cannot reach its host (DNS or TLS failure), or None.

    Retrying does not help there: the name does not resolve, or the host refuses the TLS handshake
    (the retired datarepo.eng.ucsd.edu does since 2025). The message names the host and the two
    settings that point elsewhere: base_url (another host) and raw_dir (files already on disk), in the
    config block `block` (the dataset's entry when the caller knows it). Only errors of opening the connection count (urlopen wraps them in URLError); a TLS error while
    reading the body of an open connection is a dropped connection, retried like any other.
    """
    reason = err.reason if isinstance(err, urllib.error.URLError) else None
    if isinstance(reason, socket.gaierror):
        what = "the host name does not resolve (DNS)"
    elif isinstance(reason, ssl.SSLError | ssl.CertificateError):
        what = "the TLS handshake failed"
    else:
        return None
    host = urllib.parse.urlsplit(url).hostname
    return (
        f"{url}: {what} for host {host} ({type(reason).__name__}: {reason}). The files may have moved: "
        f"set {block}.base_url to a host serving categoryFiles/ and metaFiles2/ (default in "
        f"config/schema.yaml), or {block}.raw_dir to a folder already holding {{category}}.json.gz "
        "and meta_{category}.json.gz"
    )


def verify_gzip(path: str | Path, what: str) -> str:
    """Read the gzip file to its end (raises ValueError naming `what` if it is not whole); return sha256."""
    digest = hashlib.sha256()
    with open(path, "rb") as raw:
        for block in iter(lambda: raw.read(_CHUNK), b""):
            digest.update(block)
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(_CHUNK):
                pass
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{what}: not a complete gzip file ({type(err).__name__}: {err})") from err
    return digest.hexdigest()


def download_file(
    url: str,
    dest: str | Path,
    sha256: str | None = None,
    retries: int = 6,
    backoff_s: float = 2.0,
    timeout_s: float = 60.0,
    block: str = "datasets.<name>",
) -> Path:
    """Download `url` to `dest`, resuming with HTTP Range after a dropped connection.

    Bytes go to `<dest>.part`; after each failure the next attempt asks for the rest
    (`Range: bytes=<size>-`) after waiting backoff_s * 2**attempt seconds. Only a file that reads
    to the end as gzip, and matches `sha256` when given, is renamed to `dest`; otherwise the
    partial file is removed and ValueError names the URL and the file. A DNS or TLS failure raises at
    once (no retries), naming the host and the settings base_url and raw_dir of `block`
    (`unreachable_host`).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    total: int | None = None
    for attempt in range(retries + 1):
        have = part.stat().st_size if part.exists() else 0
        if total is not None and have >= total:
            break
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as resp:
                if have and resp.status != 206:  # the server ignored Range: start over
                    log.info("%s: server ignored Range, restarting from byte 0", url)
                    have = 0
                length = resp.headers.get("Content-Length")
                total = have + int(length) if length is not None else None
                with (
                    open(part, "ab" if have else "wb") as out,
                    tqdm(
                        total=total, initial=have, unit="B", unit_scale=True, desc=dest.name, mininterval=5
                    ) as bar,
                ):
                    for block in iter(lambda: resp.read(_CHUNK), b""):
                        out.write(block)
                        bar.update(len(block))
            got = part.stat().st_size
            if total is None or got >= total:
                break
            log.warning("%s: connection closed at %d of %d bytes", url, got, total)
        except (
            urllib.error.URLError,
            http.client.HTTPException,
            ConnectionError,
            TimeoutError,
            ssl.SSLError,
        ) as err:
            if (message := unreachable_host(url, err, block)) is not None:
                raise ValueError(message) from err
            if isinstance(err, urllib.error.HTTPError) and err.code in (403, 404, 410):
                raise ValueError(f"{url}: HTTP {err.code} {err.reason}; check base_url and category") from err
            if isinstance(err, urllib.error.HTTPError) and err.code == 416 and have:
                break  # nothing left after `have` bytes (a complete .part from an earlier run): verify it
            log.warning("%s: attempt %d failed (%s: %s)", url, attempt + 1, type(err).__name__, err)
        if attempt == retries:
            raise ValueError(
                f"{url}: download incomplete after {retries + 1} attempts ({part} kept for resume)"
            )
        time.sleep(backoff_s * 2**attempt)
    try:
        digest = verify_gzip(part, f"{url} -> {part}")
        if sha256 and digest != sha256:
            raise ValueError(f"{url} -> {dest}: sha256 {digest}, expected {sha256} (config checksums)")
    except ValueError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    log.info("%s -> %s (%d bytes, sha256 %s)", url, dest, dest.stat().st_size, digest)
    return dest


def _json_lines(path: str | Path, drops: Counter, prefix: str):
    """(line number, object) for each line that parses as a JSON object; count and log the others.

    Bytes that are not UTF-8 are replaced (U+FFFD) and the lines holding them counted
    (`{prefix}_non_utf8_line`); a file that is not gzip or ends early raises naming the file and line.
    """
    number = 0
    try:
        with gzip.open(path, "rb") as stream:
            for number, raw in enumerate(
                tqdm(stream, desc=Path(path).name, unit=" lines", mininterval=10), 1
            ):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    line = raw.decode("utf-8", errors="replace")
                    drops[f"{prefix}_non_utf8_line"] += 1
                    if drops[f"{prefix}_non_utf8_line"] <= MAX_LOGGED:
                        log.warning("%s:%d: bytes that are not UTF-8 replaced (%s)", path, number, err.reason)
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as err:
                    obj, reason = None, f"{type(err).__name__}: {err}"
                else:
                    reason = None if isinstance(obj, dict) else f"a JSON {type(obj).__name__}, not an object"
                if reason is not None:
                    drops[f"{prefix}_malformed_line"] += 1
                    if drops[f"{prefix}_malformed_line"] <= MAX_LOGGED:
                        log.warning("%s:%d: skipped malformed line (%s)", path, number, reason)
                    continue
                yield number, obj
    except (OSError, EOFError, zlib.error) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(
            f"{path}: not a complete gzip file, read up to line {number} ({type(err).__name__}: {err}); "
            "delete it and download it again"
        ) from err


def read_meta_titles(
    path: str | Path, max_title_words: int, drops: Counter, cleaning: str
) -> tuple[dict[str, str], set[str]]:
    """({asin: clean title}, asins whose title was dropped) from a meta_{category}.json.gz file.

    Rows without an asin or title are counted. An asin listed twice: `cleaning` flowrec keeps its first
    usable title; published does as the published script, which overwrites the title with every later
    usable row and drops the asin if any of its rows is rejected.
    """
    titles: dict[str, str] = {}
    rejected: set[str] = set()
    for number, obj in _json_lines(path, drops, "meta"):
        asin = obj.get("asin")
        if not isinstance(asin, str) or not asin:
            drops["meta_missing_asin"] += 1
            if drops["meta_missing_asin"] <= MAX_LOGGED:
                log.warning("%s:%d: no asin", path, number)
            continue
        if asin in titles or (cleaning == "published" and asin in rejected):
            drops["meta_duplicate_asin"] += 1
            if cleaning != "published":
                continue
        title, reason = clean_title(obj.get("title"), max_title_words, cleaning)
        if reason:
            drops[f"meta_{reason}"] += 1
            rejected.add(asin)
        else:
            titles[asin] = title
    if cleaning == "published":
        for asin in rejected:
            titles.pop(asin, None)
    else:
        rejected -= titles.keys()
    log.info("%s: %d items with a clean title, %d rejected", path, len(titles), len(rejected))
    return titles, rejected


def read_reviews(
    path: str | Path,
    titles: dict[str, str],
    rejected: set[str],
    drops: Counter,
    low: int | None = None,
    high: int | None = None,
) -> pd.DataFrame:
    """Reviews of items with a clean title, as columns user, item, timestamp, rating (file order).

    Reviews outside [low, high] (unix s, inclusive; None = open) are dropped while streaming, so
    memory holds only the window. Each dropped review is counted under one reason.
    """
    users: dict[str, int] = {}
    items: dict[str, int] = {}
    user_col, item_col, ts_col, rating_col = array("i"), array("i"), array("q"), array("f")
    for number, obj in _json_lines(path, drops, "review"):
        user, asin, stamp = obj.get("reviewerID"), obj.get("asin"), obj.get("unixReviewTime")
        if not isinstance(user, str) or not isinstance(asin, str) or not isinstance(stamp, int):
            field = (
                "reviewerID"
                if not isinstance(user, str)
                else "asin"
                if not isinstance(asin, str)
                else "unixReviewTime"
            )
            drops["review_missing_field"] += 1
            if drops["review_missing_field"] <= MAX_LOGGED:
                log.warning("%s:%d: missing or invalid %s", path, number, field)
            continue
        if (low is not None and stamp < low) or (high is not None and stamp > high):
            drops["outside_window"] += 1
            continue
        if asin not in titles:
            drops["review_item_title_dropped" if asin in rejected else "review_item_no_metadata"] += 1
            continue
        rating = obj.get("overall")
        user_col.append(users.setdefault(user, len(users)))
        item_col.append(items.setdefault(asin, len(items)))
        ts_col.append(stamp)
        rating_col.append(float(rating) if isinstance(rating, int | float) else float("nan"))
    log.info("%s: %d reviews kept, %d users, %d items", path, len(ts_col), len(users), len(items))
    user_names = np.array(list(users), dtype=object)
    item_names = np.array(list(items), dtype=object)
    return pd.DataFrame(
        {
            "user": pd.Categorical.from_codes(np.asarray(user_col, np.int32), categories=user_names),
            "item": pd.Categorical.from_codes(np.asarray(item_col, np.int32), categories=item_names),
            "timestamp": np.asarray(ts_col, np.int64),
            "rating": np.asarray(rating_col, np.float32).astype(np.float64),
        }
    )


def load_amazon(
    reviews_path: str | Path,
    meta_path: str | Path,
    max_title_words: int,
    drops: Counter,
    low: int | None,
    high: int | None,
    cleaning: str,
) -> tuple[pd.DataFrame, pd.Series]:
    """(interactions, titles) of one category: metadata first (titles, `cleaning` as
    datasets.*.title_cleaning), then the reviews streamed."""
    titles, rejected = read_meta_titles(meta_path, max_title_words, drops, cleaning)
    inter = read_reviews(reviews_path, titles, rejected, drops, low, high)
    used = inter["item"].cat.categories
    return inter, pd.Series([titles[a] for a in used], index=np.asarray(used, dtype=object), name="title")

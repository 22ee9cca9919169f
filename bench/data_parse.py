"""Benchmark: streaming parse of a large synthetic Amazon 2018 reviews file (throughput, peak RSS).

Usage: .venv/bin/python bench/data_parse.py [--lines 1000000] [--dir /tmp/flowrec_bench]
Writes a gzip of `lines` review lines (and a metadata file) once, then times flowrec.data.amazon's
parse and prints lines/s and the process's peak resident memory. Not a test.
"""

import argparse
import gzip
import json
import resource
import time
from collections import Counter
from pathlib import Path

import numpy as np

from flowrec.data.amazon import load_amazon


def write_synthetic(folder: Path, lines: int, seed: int = 0) -> tuple[Path, Path]:
    """Reviews with Zipf-like items, ~lines/5 users, unix times over 2014..2018; one title per item."""
    folder.mkdir(parents=True, exist_ok=True)
    reviews, meta = folder / f"Synthetic_{lines}.json.gz", folder / f"meta_Synthetic_{lines}.json.gz"
    if reviews.exists() and meta.exists():
        return reviews, meta
    rng = np.random.default_rng(seed)
    n_items = max(lines // 20, 10)
    users = rng.integers(0, max(lines // 5, 1), lines)
    items = np.minimum(rng.zipf(1.3, lines), n_items) - 1
    stamps = rng.integers(1388534400, 1543622400, lines)
    with gzip.open(reviews, "wt", compresslevel=1) as out:
        for u, i, t in zip(users, items, stamps, strict=True):
            out.write(
                json.dumps(
                    {
                        "overall": 5.0,
                        "verified": True,
                        "reviewTime": "01 1, 2018",
                        "reviewerID": f"A{u:012d}",
                        "asin": f"B{i:09d}",
                        "reviewText": "Great record, would listen again.",
                        "summary": "Five Stars",
                        "unixReviewTime": int(t),
                    }
                )
                + "\n"
            )
    with gzip.open(meta, "wt", compresslevel=1) as out:
        for i in range(n_items):
            out.write(json.dumps({"asin": f"B{i:09d}", "title": f"Album number {i}", "brand": "x"}) + "\n")
    return reviews, meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/flowrec_bench"))
    args = parser.parse_args()
    start = time.perf_counter()
    reviews, meta = write_synthetic(args.dir, args.lines)
    print(
        f"synthetic data: {reviews} ({reviews.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s"
    )
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    drops: Counter = Counter()
    inter, titles = load_amazon(reviews, meta, 20, drops, None, None, "flowrec")
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"parsed {args.lines} review lines in {elapsed:.1f} s: {args.lines / elapsed:,.0f} lines/s")
    print(
        f"kept {len(inter)} reviews, {inter['user'].nunique()} users, {len(titles)} items; dropped {dict(drops)}"
    )
    print(
        f"peak RSS {peak:.0f} MiB (before parsing {rss_before:.0f} MiB); frame {inter.memory_usage(deep=True).sum() / 2**20:.0f} MiB"
    )


if __name__ == "__main__":
    main()

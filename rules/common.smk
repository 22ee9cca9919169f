# Shared by every rule file: config validation, wildcard constraints, path helpers (get_*).
import os
from pathlib import Path

from snakemake.utils import validate

validate(config, "../config/schema.yaml")

# Rules run stage entries with `script:`; put src/ on the path so that they import the package
# in any environment (the project venv, or a conda env built from envs/*.yaml).
_SRC = str(Path(workflow.basedir) / "src")
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_SRC, os.environ.get("PYTHONPATH")) if p)

DATASETS = list(config["active_datasets"])
_unknown = [d for d in DATASETS + list(config["distfit"]["datasets"]) if d not in config["datasets"]]
if _unknown:
    raise ValueError(f"config: active_datasets/distfit.datasets name {_unknown}, not keys of `datasets`")
TUNED_METHODS = ["bigrec", "ifairlrs", "flower"]
# Decoded methods: name -> the tuned model it decodes with.
DECODED_METHODS = {
    "bigrec": "bigrec",
    "temp": "bigrec",
    "d3": "bigrec",
    "d3_noassist": "bigrec",
    "ifairlrs": "ifairlrs",
    "flower": "flower",
}
TABLE_METHODS = ["sasrec", *DECODED_METHODS]
DISTFIT_METHODS = ["base", "sft", "dpo", "ppo", "flower"]


wildcard_constraints:
    dataset="|".join(sorted(set(DATASETS) | set(config["distfit"]["datasets"]))),
    method="|".join(sorted(set(TABLE_METHODS) | set(DISTFIT_METHODS))),


def get_dataset_settings(wildcards):
    return config["datasets"][wildcards.dataset]


def get_final_outputs():
    outputs = [
        "results/tables/all.csv",
        "results/tables/all.md",
    ]
    for dataset in DATASETS:
        outputs += [
            f"results/{dataset}/tables/results.csv",
            f"results/{dataset}/figures/popularity_groups.png",
            f"results/{dataset}/figures/flower_training.png",
        ]
    for dataset in config["distfit"]["datasets"]:
        outputs += [f"results/{dataset}/distfit/table.csv", f"results/{dataset}/distfit/figure.png"]
    return outputs

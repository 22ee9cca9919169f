# Data stage (method.md section 2): download (Amazon only), then one rule for every source.
import importlib.util
import os

_AMAZON_DEFAULT_URL = "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2"


def get_download_settings(wildcards):
    """Only the settings the download uses: changing k_core must not download again."""
    settings = config["datasets"][wildcards.dataset]
    return {
        "category": settings["category"],
        "base_url": settings.get("base_url", _AMAZON_DEFAULT_URL),
        "checksums": settings.get("checksums", {}),
    }


def get_prepare_data_inputs(wildcards):
    """The source files of a dataset, named by role (see flowrec.data.prepare)."""
    settings = config["datasets"][wildcards.dataset]
    if settings["source"] == "movielens":
        # ml-100k inside the installed recbole (flowrec.data.movielens.movielens_folder does the same)
        spec = importlib.util.find_spec("recbole")
        folder = os.path.join(next(iter(spec.submodule_search_locations)), "dataset_example", "ml-100k")
        return {"inter": f"{folder}/ml-100k.inter", "item": f"{folder}/ml-100k.item"}
    if settings["source"] == "amazon":
        category = settings["category"]
        folder = settings.get("raw_dir") or f"results/{wildcards.dataset}/raw"
        return {"reviews": f"{folder}/{category}.json.gz", "meta": f"{folder}/meta_{category}.json.gz"}
    folder = settings["import_dir"]
    files = {name: f"{folder}/{name}.csv" for name in ("train", "valid", "test")}
    if os.path.exists(f"{folder}/items.tsv"):
        files["items_tsv"] = f"{folder}/items.tsv"
    return files


rule download_amazon:
    output:
        reviews="results/{dataset}/raw/{category,(?!meta_)[A-Za-z0-9_&-]+}.json.gz",
        meta="results/{dataset}/raw/meta_{category}.json.gz",
    log:
        "logs/download_amazon/{dataset}/{category}.log",
    benchmark:
        "benchmarks/download_amazon/{dataset}/{category}.tsv"
    params:
        settings=get_download_settings,
    threads: 1
    resources:
        mem_mb=500,
        runtime=240,
    conda:
        "../envs/data.yaml"
    script:
        "../src/flowrec/stages/download_amazon.py"


rule prepare_data:
    input:
        unpack(get_prepare_data_inputs),
        code=[
            "src/flowrec/data/__init__.py",
            "src/flowrec/data/amazon.py",
            "src/flowrec/data/movielens.py",
            "src/flowrec/data/protocol.py",
            "src/flowrec/data/interop.py",
        ],
    output:
        item_table="results/{dataset}/data/items.parquet",
        train="results/{dataset}/data/train.parquet",
        valid="results/{dataset}/data/valid.parquet",
        test="results/{dataset}/data/test.parquet",
        stats="results/{dataset}/data/stats.json",
        d3_train="results/{dataset}/data/d3/train.csv",
        d3_valid="results/{dataset}/data/d3/valid.csv",
        d3_test="results/{dataset}/data/d3/test.csv",
    log:
        "logs/prepare_data/{dataset}.log",
    benchmark:
        "benchmarks/prepare_data/{dataset}.tsv"
    params:
        settings=get_dataset_settings,
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        "../envs/data.yaml"
    script:
        "../src/flowrec/stages/prepare_data.py"

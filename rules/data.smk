# Data stage (docs/method.md section 2): download (Amazon only), then one rule for every source.


# No `code` input: the raw files are the lab's, checked by size and checksum, not a product of our code;
# an edit of a shared module (io.py) must not download gigabytes again.
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
        code=code_of("flowrec.stages.prepare_data"),
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

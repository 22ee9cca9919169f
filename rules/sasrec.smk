# SASRec in RecBole (docs/method.md sections 4-5): p_ui for Flower's rewards and D3's assistant, and the
# SASRec baseline's top-10 list.


rule train_sasrec:
    input:
        item_table="results/{dataset}/data/items.parquet",
        train="results/{dataset}/data/train.parquet",
        valid="results/{dataset}/data/valid.parquet",
        test="results/{dataset}/data/test.parquet",
        code=code_of("flowrec.stages.train_sasrec"),
    output:
        model="results/{dataset}/sasrec/model.pth",
        metrics="results/{dataset}/sasrec/metrics.json",
        p_ui_train="results/{dataset}/sasrec/p_ui_train.npy",
        p_ui_valid="results/{dataset}/sasrec/p_ui_valid.npy",
        p_ui_test="results/{dataset}/sasrec/p_ui_test.npy",
        predictions="results/{dataset}/predictions/sasrec.parquet",
    log:
        "logs/train_sasrec/{dataset}.log",
    benchmark:
        "benchmarks/train_sasrec/{dataset}.tsv"
    params:
        sasrec=config["sasrec"],
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        "../envs/recbole.yaml"
    script:
        "../src/flowrec/stages/train_sasrec.py"

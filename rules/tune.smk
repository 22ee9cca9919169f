# LLM fine-tuning (method.md sections 4-5): BIGRec (SFT), IFairLRS (SFT with popularity-group weights)
# and Flower (SFT + lambda * subtrajectory balance on on-policy samples). One rule per method, one
# stage entry and one training loop. Checkpoints live in results/{dataset}/tune/{method}/checkpoints/,
# deliberately not an output: Snakemake deletes a job's outputs before rerunning it, which would throw
# away the checkpoint a killed job resumes from. More than one GPU in the rule's resources (gpu, or
# nproc to force a process count) runs the job under torchrun with one process per device.

TUNE_CODE = [
    "src/flowrec/model.py",
    "src/flowrec/prompts.py",
    "src/flowrec/trie.py",
    "src/flowrec/sampling.py",
    "src/flowrec/subsets.py",
    "src/flowrec/tune/data.py",
    "src/flowrec/tune/forward.py",
    "src/flowrec/tune/losses.py",
    "src/flowrec/tune/loop.py",
    "src/flowrec/tune/run.py",
    "src/flowrec/distributed.py",
    "src/flowrec/io.py",
    "src/flowrec/stages/tune_model.py",
]


rule tune_bigrec:
    input:
        items_parquet="results/{dataset}/data/items.parquet",
        train="results/{dataset}/data/train.parquet",
        valid="results/{dataset}/data/valid.parquet",
        trie="results/{dataset}/trie/trie.npz",
        code=TUNE_CODE,
    output:
        model=directory("results/{dataset}/tune/bigrec/model"),
        log_csv="results/{dataset}/tune/bigrec/log.csv",
        loss_png="results/{dataset}/tune/bigrec/loss.png",
    log:
        "logs/tune_bigrec/{dataset}.log",
    benchmark:
        "benchmarks/tune_bigrec/{dataset}.tsv"
    params:
        method="bigrec",
        checkpoints="results/{dataset}/tune/bigrec/checkpoints",
        model=config["model"],
        prompt=config["prompt"],
        tune=config["tune"],
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=0,
    conda:
        "../envs/llm.yaml"
    script:
        "../src/flowrec/stages/tune_model.py"


rule tune_ifairlrs:
    input:
        items_parquet="results/{dataset}/data/items.parquet",
        train="results/{dataset}/data/train.parquet",
        valid="results/{dataset}/data/valid.parquet",
        trie="results/{dataset}/trie/trie.npz",
        groups="results/{dataset}/trie/groups.parquet",
        groups_json="results/{dataset}/trie/groups.json",
        code=TUNE_CODE,
    output:
        model=directory("results/{dataset}/tune/ifairlrs/model"),
        log_csv="results/{dataset}/tune/ifairlrs/log.csv",
        loss_png="results/{dataset}/tune/ifairlrs/loss.png",
    log:
        "logs/tune_ifairlrs/{dataset}.log",
    benchmark:
        "benchmarks/tune_ifairlrs/{dataset}.tsv"
    params:
        method="ifairlrs",
        checkpoints="results/{dataset}/tune/ifairlrs/checkpoints",
        model=config["model"],
        prompt=config["prompt"],
        tune=config["tune"],
        ifairlrs=config["ifairlrs"],
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=0,
    conda:
        "../envs/llm.yaml"
    script:
        "../src/flowrec/stages/tune_model.py"


rule tune_flower:
    input:
        items_parquet="results/{dataset}/data/items.parquet",
        train="results/{dataset}/data/train.parquet",
        valid="results/{dataset}/data/valid.parquet",
        trie="results/{dataset}/trie/trie.npz",
        p_ui_train="results/{dataset}/sasrec/p_ui_train.npy",
        code=TUNE_CODE,
    output:
        model=directory("results/{dataset}/tune/flower/model"),
        log_csv="results/{dataset}/tune/flower/log.csv",
        loss_png=report(
            "results/{dataset}/tune/flower/loss.png",
            caption="../report/flower_training.rst",
            category="Training",
            subcategory="{dataset}",
        ),
    log:
        "logs/tune_flower/{dataset}.log",
    benchmark:
        "benchmarks/tune_flower/{dataset}.tsv"
    params:
        method="flower",
        checkpoints="results/{dataset}/tune/flower/checkpoints",
        model=config["model"],
        prompt=config["prompt"],
        tune=config["tune"],
        flower=config["flower"],
        granularity=config["trie"]["granularity"],
    threads: 2
    resources:
        mem_mb=8000,
        runtime=480,
        gpu=0,
    conda:
        "../envs/llm.yaml"
    script:
        "../src/flowrec/stages/tune_model.py"

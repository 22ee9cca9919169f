# LLM fine-tuning (docs/method.md sections 4-5), one rule for the three methods: BIGRec (SFT), IFairLRS
# (SFT with popularity-group weights) and Flower (SFT + lambda * subtrajectory balance on on-policy
# samples). A method's own inputs and settings come from get_tune_inputs, get_flower_settings and
# get_tune_granularity (common.smk), so a Flower setting reruns only Flower. Checkpoints live in results/{dataset}/tune/{method}/checkpoints/,
# deliberately not an output: Snakemake deletes a job's outputs before rerunning it, which would throw
# away the checkpoint a killed job resumes from. More than one GPU in the rule's resources (gpu, or
# nproc to force a process count) runs the job under torchrun with one process per device.


rule tune:
    wildcard_constraints:
        method="|".join(TUNED_METHODS),
    input:
        unpack(get_tune_inputs),
        unpack(get_base_model_input),
        item_table="results/{dataset}/data/items.parquet",
        train="results/{dataset}/data/train.parquet",
        valid="results/{dataset}/data/valid.parquet",
        trie="results/{dataset}/trie/trie.npz",
        code=code_of("flowrec.stages.tune_model"),
    output:
        model_dir=directory("results/{dataset}/tune/{method}/model"),
        log_csv="results/{dataset}/tune/{method}/log.csv",
        loss_png=report(
            "results/{dataset}/tune/{method}/loss.png",
            caption="../report/tune_training.rst",
            category="Training",
            subcategory="{dataset}",
        ),
    log:
        "logs/tune/{dataset}/{method}.log",
    benchmark:
        "benchmarks/tune/{dataset}/{method}.tsv"
    params:
        checkpoints="results/{dataset}/tune/{method}/checkpoints",
        model=MODEL_SETTINGS,
        prompt=config["prompt"],
        tune=config["tune"],
        flower=get_flower_settings,
        granularity=get_tune_granularity,
    threads: 2
    resources:
        mem_mb=get_tune_mem_mb,
        runtime=get_tune_runtime,
        gpu=GPUS,
    conda:
        "../envs/llm.yaml"
    script:
        "../src/flowrec/stages/tune_model.py"

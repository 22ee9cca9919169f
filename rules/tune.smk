# LLM fine-tuning (docs/method.md sections 4-5 and 10), one rule for every trained method of the registry
# (flowrec.methods): BIGRec (SFT), IFairLRS (SFT with popularity-group weights), Flower (SFT + lambda *
# subtrajectory balance on on-policy samples), and RQ3's aligned methods (S-DPO, DMPO, RosePO, PPO),
# which start from a tuned model and hold a frozen copy of it as the reference. A method's own inputs
# and settings come from get_tune_inputs, get_tune_block, get_flower_settings, get_align_settings and
# get_tune_granularity (common.smk), so a Flower setting reruns only Flower, an align setting only RQ3. Checkpoints live in results/{dataset}/tune/{method}/checkpoints/,
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
        tune=get_tune_block,
        flower=get_flower_settings,
        align=get_align_settings,
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

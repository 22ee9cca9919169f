# Distribution fitting without history (the paper's RQ1, docs/method.md sections 4 and 6): a target set
# of titles with counts, one base model tuned six ways on the history-free prompt, titles sampled under
# the target trie, and their divergence from the target (flowrec.distfit; one stage entry per rule).


# Cheap rules run inside Snakemake's own process on a cluster, not as one sbatch job each.
localrules:
    distfit_table,
    distfit_figure,


rule distfit_target:
    input:
        unpack(get_distfit_target_inputs),
        unpack(get_base_model_input),
        code=code_of("flowrec.stages.distfit_target"),
    output:
        target="results/{dataset}/distfit/target.json",
        trie="results/{dataset}/distfit/trie.npz",
        tuning_set="results/{dataset}/distfit/tuning_set.parquet",
    log:
        "logs/distfit_target/{dataset}.log",
    benchmark:
        "benchmarks/distfit_target/{dataset}.tsv"
    params:
        distfit=get_distfit_settings(_DISTFIT_TARGET_KEYS),
        model_name=BASE_MODEL,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/llm.yaml"
    script:
        "../src/flowrec/stages/distfit_target.py"


rule distfit_tune:
    wildcard_constraints:
        method="|".join(DISTFIT_TUNED),
    input:
        unpack(get_base_model_input),
        target="results/{dataset}/distfit/target.json",
        trie="results/{dataset}/distfit/trie.npz",
        tuning_set="results/{dataset}/distfit/tuning_set.parquet",
        code=code_of("flowrec.stages.distfit_tune"),
    output:
        model=directory("results/{dataset}/distfit/{method}/model"),
        log_csv="results/{dataset}/distfit/{method}/log.csv",
        loss_png="results/{dataset}/distfit/{method}/loss.png",
    log:
        "logs/distfit_tune/{dataset}/{method}.log",
    benchmark:
        "benchmarks/distfit_tune/{dataset}/{method}.tsv"
    params:
        distfit=get_distfit_tune_settings,
        base_model=MODEL_SETTINGS,
    threads: 2
    resources:
        mem_mb=get_distfit_tune_mem_mb,
        runtime=240,
        gpu=GPUS,
    conda:
        "../envs/llm.yaml"
    script:
        "../src/flowrec/stages/distfit_tune.py"


rule distfit_generate:
    wildcard_constraints:
        method="|".join(DISTFIT_ROWS),
    input:
        unpack(get_distfit_generate_inputs),
        unpack(get_base_model_input),
        trie="results/{dataset}/distfit/trie.npz",
        code=code_of("flowrec.stages.distfit_generate"),
    output:
        samples="results/{dataset}/distfit/samples/{method}.parquet",
        probs="results/{dataset}/distfit/probs/{method}.parquet",
    log:
        "logs/distfit_generate/{dataset}/{method}.log",
    benchmark:
        "benchmarks/distfit_generate/{dataset}/{method}.tsv"
    params:
        distfit=get_distfit_settings(_DISTFIT_GENERATE_KEYS),
        model_name=BASE_MODEL,
    threads: 2
    resources:
        mem_mb=get_distfit_generate_mem_mb,
        runtime=120,
        gpu=GPUS,
    conda:
        "../envs/llm.yaml"
    script:
        "../src/flowrec/stages/distfit_generate.py"


rule distfit_table:
    input:
        target="results/{dataset}/distfit/target.json",
        trie="results/{dataset}/distfit/trie.npz",
        tuning_set="results/{dataset}/distfit/tuning_set.parquet",
        samples=expand("results/{{dataset}}/distfit/samples/{method}.parquet", method=DISTFIT_ROWS),
        probs=expand("results/{{dataset}}/distfit/probs/{method}.parquet", method=DISTFIT_ROWS),
        code=code_of("flowrec.stages.distfit_table"),
    output:
        csv=report(
            "results/{dataset}/distfit/table.csv",
            caption="../report/distfit_table.rst",
            category="Distribution fitting",
            subcategory="{dataset}",
        ),
        md="results/{dataset}/distfit/table.md",
    log:
        "logs/distfit_table/{dataset}.log",
    benchmark:
        "benchmarks/distfit_table/{dataset}.tsv"
    params:
        methods=DISTFIT_ROWS,
        # the bootstrap settings only: a change of metrics.ks does not redo this table
        metrics={key: config["metrics"][key] for key in ("bootstrap_draws", "bootstrap_seed", "confidence")},
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/llm.yaml"  # the trie (token-level divergences) needs torch
    script:
        "../src/flowrec/stages/distfit_table.py"


rule distfit_figure:
    input:
        target="results/{dataset}/distfit/target.json",
        samples=expand("results/{{dataset}}/distfit/samples/{method}.parquet", method=DISTFIT_ROWS),
        code=code_of("flowrec.stages.distfit_figure"),
    output:
        figure=report(
            "results/{dataset}/distfit/figure.png",
            caption="../report/distfit_figure.rst",
            category="Distribution fitting",
            subcategory="{dataset}",
        ),
    log:
        "logs/distfit_figure/{dataset}.log",
    benchmark:
        "benchmarks/distfit_figure/{dataset}.tsv"
    params:
        methods=DISTFIT_ROWS,
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/report.yaml"  # torch-free: flowrec.distfit.files and flowrec.report
    script:
        "../src/flowrec/stages/distfit_figure.py"

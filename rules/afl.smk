# AFL, the agentic feedback loop between a recommendation agent and a user agent (docs/method.md
# section 9): candidate lists, GRU4Rec and Caser beside SASRec, the loop per recommendation model and
# variant, user simulation, and the two tables. Every LLM call goes through the cache afl.cache.


rule afl_candidates:
    input:
        test="results/{dataset}/data/test.parquet",
        item_table="results/{dataset}/data/items.parquet",
        code=code_of("flowrec.stages.afl_candidates"),
    output:
        candidates="results/{dataset}/afl/candidates.parquet",
    log:
        "logs/afl_candidates/{dataset}.log",
    benchmark:
        "benchmarks/afl_candidates/{dataset}.tsv"
    params:
        afl=get_afl_settings(_AFL_CANDIDATE_KEYS),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/recbole.yaml"
    script:
        "../src/flowrec/stages/afl_candidates.py"


rule afl_train_recmodel:
    wildcard_constraints:
        recmodel="gru4rec|caser",
    input:
        item_table="results/{dataset}/data/items.parquet",
        train="results/{dataset}/data/train.parquet",
        valid="results/{dataset}/data/valid.parquet",
        test="results/{dataset}/data/test.parquet",
        code=code_of("flowrec.stages.afl_train_recmodel"),
    output:
        model="results/{dataset}/afl/recmodels/{recmodel}/model.pth",
        p_ui_test="results/{dataset}/afl/recmodels/{recmodel}/p_ui_test.npy",
        metrics="results/{dataset}/afl/recmodels/{recmodel}/metrics.json",
    log:
        "logs/afl_train_recmodel/{dataset}/{recmodel}.log",
    benchmark:
        "benchmarks/afl_train_recmodel/{dataset}/{recmodel}.tsv"
    params:
        recmodel_settings=lambda wildcards: config["afl"][wildcards.recmodel],
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        "../envs/recbole.yaml"
    script:
        "../src/flowrec/stages/afl_train_recmodel.py"


rule afl_recommend:
    input:
        test="results/{dataset}/data/test.parquet",
        item_table="results/{dataset}/data/items.parquet",
        candidates="results/{dataset}/afl/candidates.parquet",
        rec_p_ui=get_afl_rec_p_ui,
        reward_p_ui="results/{dataset}/sasrec/p_ui_test.npy",
        code=code_of("flowrec.stages.afl_recommend"),
    output:
        outcomes="results/{dataset}/afl/recommend/{recmodel}/{variant}.parquet",
        metrics="results/{dataset}/afl/recommend/{recmodel}/{variant}.json",
    log:
        "logs/afl_recommend/{dataset}/{recmodel}/{variant}.log",
    benchmark:
        "benchmarks/afl_recommend/{dataset}/{recmodel}/{variant}.tsv"
    params:
        afl=get_afl_settings(_AFL_RUN_KEYS),
        backend=get_afl_backend,
        cache=config["afl"]["cache"],
        domain=get_afl_domain,
    threads: 2
    resources:
        mem_mb=4000,
        runtime=get_afl_runtime,
    conda:
        "../envs/llm.yaml"
    script:
        "../src/flowrec/stages/afl_recommend.py"


rule afl_simulate:
    input:
        test="results/{dataset}/data/test.parquet",
        valid="results/{dataset}/data/valid.parquet",
        item_table="results/{dataset}/data/items.parquet",
        candidates="results/{dataset}/afl/candidates.parquet",
        p_ui_test="results/{dataset}/sasrec/p_ui_test.npy",
        p_ui_valid="results/{dataset}/sasrec/p_ui_valid.npy",
        code=code_of("flowrec.stages.afl_simulate"),
    output:
        metrics="results/{dataset}/afl/simulate/{variant}.json",
    log:
        "logs/afl_simulate/{dataset}/{variant}.log",
    benchmark:
        "benchmarks/afl_simulate/{dataset}/{variant}.tsv"
    params:
        afl=get_afl_settings(_AFL_SIMULATE_KEYS),
        backend=get_afl_backend,
        cache=config["afl"]["cache"],
        domain=get_afl_domain,
    threads: 2
    resources:
        mem_mb=4000,
        runtime=get_afl_runtime,
    conda:
        "../envs/llm.yaml"
    script:
        "../src/flowrec/stages/afl_simulate.py"


rule afl_table:
    input:
        recommend=get_afl_recommend_outputs,
        simulate=expand("results/{{dataset}}/afl/simulate/{variant}.json", variant=config["afl"]["simulate"]),
        code=code_of("flowrec.stages.afl_table"),
    output:
        csv=report(
            "results/{dataset}/afl/table.csv",
            caption="../report/afl_table.rst",
            category="AFL",
            subcategory="{dataset}",
        ),
        md="results/{dataset}/afl/table.md",
    log:
        "logs/afl_table/{dataset}.log",
    benchmark:
        "benchmarks/afl_table/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/report.yaml"
    script:
        "../src/flowrec/stages/afl_table.py"

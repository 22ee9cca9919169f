# Result tables and figures, each wrapped for `snakemake --report results/report.html`.


# Cheap rules run inside Snakemake's own process on a cluster, not as one sbatch job each.
localrules:
    make_tables,
    make_rq3_table,
    make_combined_table,
    make_figures,


rule make_tables:
    input:
        metrics=expand("results/{{dataset}}/metrics/{method}.json", method=TABLE_METHODS),
        samples=expand("results/{{dataset}}/metrics/samples/{method}.parquet", method=TABLE_METHODS),
        code=code_of("flowrec.stages.make_tables"),
    output:
        csv=report(
            "results/{dataset}/tables/results.csv",
            caption="../report/results_table.rst",
            category="Results",
            subcategory="{dataset}",
        ),
        md="results/{dataset}/tables/results.md",
        paired_csv=report(
            "results/{dataset}/tables/paired.csv",
            caption="../report/paired_table.rst",
            category="Results",
            subcategory="{dataset}",
        ),
        paired_figure=report(
            "results/{dataset}/figures/paired_differences.png",
            caption="../report/paired_differences.rst",
            category="Figures",
            subcategory="{dataset}",
        ),
    log:
        "logs/make_tables/{dataset}.log",
    benchmark:
        "benchmarks/make_tables/{dataset}.tsv"
    params:
        methods=TABLE_METHODS,
        metrics_settings=config["metrics"],
        baseline="bigrec",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../envs/report.yaml"
    script:
        "../src/flowrec/stages/make_tables.py"


# Table 5 (RQ3): the aligned rows (align.methods from align.starts) and F_x - B_x per algorithm.
rule make_rq3_table:
    input:
        metrics=expand("results/{{dataset}}/metrics/{method}.json", method=ALIGN_METHODS),
        samples=expand("results/{{dataset}}/metrics/samples/{method}.parquet", method=ALIGN_METHODS),
        code=code_of("flowrec.stages.make_rq3_table"),
    output:
        csv=report(
            "results/{dataset}/tables/rq3.csv",
            caption="../report/rq3_table.rst",
            category="Results",
            subcategory="{dataset}",
        ),
        md="results/{dataset}/tables/rq3.md",
        paired_csv="results/{dataset}/tables/rq3_paired.csv",
    log:
        "logs/make_rq3_table/{dataset}.log",
    benchmark:
        "benchmarks/make_rq3_table/{dataset}.tsv"
    params:
        methods=ALIGN_METHODS,
        metrics_settings=config["metrics"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../envs/report.yaml"
    script:
        "../src/flowrec/stages/make_rq3_table.py"


rule make_combined_table:
    input:
        tables=expand("results/{dataset}/tables/results.csv", dataset=DATASETS),
        code=code_of("flowrec.stages.make_combined_table"),
    output:
        csv=report("results/tables/all.csv", caption="../report/combined_table.rst", category="Results"),
        md="results/tables/all.md",
    log:
        "logs/make_combined_table/all.log",
    benchmark:
        "benchmarks/make_combined_table/all.tsv"
    params:
        datasets=DATASETS,
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/report.yaml"
    script:
        "../src/flowrec/stages/make_combined_table.py"


rule make_figures:
    input:
        metrics=expand("results/{{dataset}}/metrics/{method}.json", method=TABLE_METHODS),
        group_shares="results/{dataset}/trie/groups.json",
        flower_log="results/{dataset}/tune/flower/log.csv",
        code=code_of("flowrec.stages.make_figures"),
    output:
        popularity=report(
            "results/{dataset}/figures/popularity_groups.png",
            caption="../report/popularity_groups.rst",
            category="Figures",
            subcategory="{dataset}",
        ),
        training=report(
            "results/{dataset}/figures/flower_training.png",
            caption="../report/flower_training.rst",
            category="Figures",
            subcategory="{dataset}",
        ),
    log:
        "logs/make_figures/{dataset}.log",
    benchmark:
        "benchmarks/make_figures/{dataset}.tsv"
    params:
        methods=TABLE_METHODS,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    conda:
        "../envs/report.yaml"
    script:
        "../src/flowrec/stages/make_figures.py"

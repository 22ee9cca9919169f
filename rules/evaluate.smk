# Metrics of every method's test predictions (docs/method.md section 6): HR/NDCG, DGU/MGU, H/TTR, coverage,
# each with an interval (a bootstrap or a jackknife, flowrec.sample_metrics); and the reference rows
# Random and MostPop (docs/method.md section 5).


# Refuse at workflow start any @K above the returned list (the published code reported @20 from 10 beams).
from flowrec.metric_cutoffs import check_cutoffs

check_cutoffs(config["metrics"]["ks"], config["metrics"]["fairness_ks"], config["decode"]["num_return"])


# Cheap rules run inside Snakemake's own process on a cluster, not as one sbatch job each.
localrules:
    evaluate_method,


rule predict_reference:
    wildcard_constraints:
        method="|".join(REFERENCE_METHODS),
    input:
        item_table="results/{dataset}/data/items.parquet",
        train="results/{dataset}/data/train.parquet",
        test="results/{dataset}/data/test.parquet",
        code=code_of("flowrec.stages.predict_reference"),
    output:
        predictions="results/{dataset}/predictions/{method}.parquet",
    log:
        "logs/predict_reference/{dataset}/{method}.log",
    benchmark:
        "benchmarks/predict_reference/{dataset}/{method}.tsv"
    params:
        num_return=config["decode"]["num_return"],
        seed=config["reference"]["seed"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/report.yaml"
    script:
        "../src/flowrec/stages/predict_reference.py"


rule evaluate_method:
    wildcard_constraints:
        method="|".join(EVALUATED_METHODS),
    input:
        predictions="results/{dataset}/predictions/{method}.parquet",
        test="results/{dataset}/data/test.parquet",
        item_table="results/{dataset}/data/items.parquet",
        groups="results/{dataset}/trie/groups.parquet",
        groups_json="results/{dataset}/trie/groups.json",
        code=code_of("flowrec.stages.evaluate_method"),
    output:
        metrics_json="results/{dataset}/metrics/{method}.json",
        samples="results/{dataset}/metrics/samples/{method}.parquet",
    log:
        "logs/evaluate_method/{dataset}/{method}.log",
    benchmark:
        "benchmarks/evaluate_method/{dataset}/{method}.tsv"
    params:
        metrics=config["metrics"],
        # the decode settings the metrics depend on: which test samples count, and the list length
        decode={key: config["decode"][key] for key in ("test_samples", "seed", "num_return")},
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/report.yaml"
    script:
        "../src/flowrec/stages/evaluate_method.py"

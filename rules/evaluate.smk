# Metrics of every method's test predictions (method.md section 6): HR/NDCG, DGU/MGU, H/TTR, coverage.


def check_metric_cutoffs(metrics, decode):
    """Refuse at workflow start any @K above the returned list (the published code reported @20 of 10)."""
    for name in ("ks", "fairness_ks"):
        too_large = [k for k in metrics[name] if k > decode["num_return"]]
        if too_large:
            raise ValueError(
                f"config: metrics.{name} {metrics[name]} has K={too_large} larger than "
                f"decode.num_return={decode['num_return']}; lower the K or return more titles"
            )


check_metric_cutoffs(config["metrics"], config["decode"])


def get_eval_decode_settings():
    """The decode settings the metrics depend on: which test samples count, and the list length."""
    return {key: config["decode"][key] for key in ("test_samples", "seed", "num_return")}


rule evaluate_method:
    wildcard_constraints:
        method="|".join(TABLE_METHODS),
    input:
        predictions="results/{dataset}/predictions/{method}.parquet",
        test="results/{dataset}/data/test.parquet",
        items="results/{dataset}/data/items.parquet",
        groups="results/{dataset}/trie/groups.parquet",
        group_shares="results/{dataset}/trie/groups.json",
        code=["src/flowrec/metrics.py", "src/flowrec/subsets.py"],
    output:
        "results/{dataset}/metrics/{method}.json",
    log:
        "logs/evaluate_method/{dataset}/{method}.log",
    benchmark:
        "benchmarks/evaluate_method/{dataset}/{method}.tsv"
    params:
        metrics=config["metrics"],
        decode=get_eval_decode_settings(),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/report.yaml"
    script:
        "../src/flowrec/stages/evaluate_method.py"

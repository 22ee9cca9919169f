# Metrics of every method's test predictions (docs/method.md section 6): HR/NDCG, DGU/MGU, H/TTR, coverage.


# Refuse at workflow start any @K above the returned list (the published code reported @20 from 10 beams).
for _name in ("ks", "fairness_ks"):
    _too_large = [k for k in config["metrics"][_name] if k > config["decode"]["num_return"]]
    if _too_large:
        raise ValueError(
            f"config: metrics.{_name} {config['metrics'][_name]} has K={_too_large} larger than "
            f"decode.num_return={config['decode']['num_return']}; lower the K or return more titles"
        )


rule evaluate_method:
    wildcard_constraints:
        method="|".join(TABLE_METHODS),
    input:
        predictions="results/{dataset}/predictions/{method}.parquet",
        test="results/{dataset}/data/test.parquet",
        item_table="results/{dataset}/data/items.parquet",
        groups="results/{dataset}/trie/groups.parquet",
        groups_json="results/{dataset}/trie/groups.json",
        code=code_of("flowrec.stages.evaluate_method"),
    output:
        metrics_json="results/{dataset}/metrics/{method}.json",
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

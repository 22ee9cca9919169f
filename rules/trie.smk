# Trie over the dataset's titles (tokenized as the training targets are), item rewards R(i) from the
# train histories, and the popularity groups used by IFairLRS and the fairness metrics.


rule build_trie:
    input:
        unpack(get_base_model_input),
        item_table="results/{dataset}/data/items.parquet",
        train="results/{dataset}/data/train.parquet",
        code=code_of("flowrec.stages.build_trie"),
    output:
        trie="results/{dataset}/trie/trie.npz",
        groups="results/{dataset}/trie/groups.parquet",
        groups_json="results/{dataset}/trie/groups.json",
    log:
        "logs/build_trie/{dataset}.log",
    benchmark:
        "benchmarks/build_trie/{dataset}.tsv"
    params:
        model=BASE_MODEL,
        n_groups=config["trie"]["n_groups"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=15,
    conda:
        "../envs/llm.yaml"
    script:
        "../src/flowrec/stages/build_trie.py"

# Trie-constrained beam search of the test split (docs/method.md sections 1 and 5), one rule per decoded
# method: BIGRec, Temp, D3 and D3 without assistant decode BIGRec's model; IFairLRS and Flower their own.


rule decode:
    wildcard_constraints:
        method="|".join(DECODED_METHODS),
    input:
        unpack(get_decode_inputs),
        unpack(get_base_model_input),  # a LoRA model's base (its flowrec_model.json names this path)
        model=get_tuned_model,
        trie="results/{dataset}/trie/trie.npz",
        test="results/{dataset}/data/test.parquet",
        item_table="results/{dataset}/data/items.parquet",
        code=code_of("flowrec.stages.decode_method"),
    output:
        predictions="results/{dataset}/predictions/{method}.parquet",
    log:
        "logs/decode/{dataset}/{method}.log",
    benchmark:
        "benchmarks/decode/{dataset}/{method}.tsv"
    params:
        decode=get_decode_settings,
        prompt=config["prompt"],
    threads: 2
    resources:
        mem_mb=get_decode_mem_mb,
        runtime=480,
        gpu=GPUS,
    conda:
        "../envs/llm.yaml"
    script:
        "../src/flowrec/stages/decode_method.py"

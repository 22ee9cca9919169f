# Trie-constrained beam search of the test split (method.md sections 1 and 5), one rule per decoded
# method: BIGRec, Temp, D3 and D3 without assistant decode BIGRec's model; IFairLRS and Flower their own.

# Keys of the decode block every method uses; temp_temperature and d3_weight reach only their own row.
_DECODE_SHARED_KEYS = ("test_samples", "seed", "num_beams", "num_return", "batch_size")
_D3_METHODS = ("d3", "d3_noassist")

if config["decode"]["num_return"] > config["decode"]["num_beams"]:
    raise ValueError(
        f"config: decode.num_return={config['decode']['num_return']} exceeds decode.num_beams="
        f"{config['decode']['num_beams']}; beam search returns at most one title per beam"
    )


def get_tuned_model(wildcards):
    """The tuned model a decoded method decodes with (DECODED_METHODS in common.smk)."""
    return f"results/{wildcards.dataset}/tune/{DECODED_METHODS[wildcards.method]}/model"


def get_decode_inputs(wildcards):
    """SASRec's test scores for D3's assistant (d3_noassist keeps the assistant at weight g = 1)."""
    if wildcards.method in _D3_METHODS:
        return {"p_ui": f"results/{wildcards.dataset}/sasrec/p_ui_test.npy"}
    return {}


def get_decode_settings(wildcards):
    """flowrec.decode.DecodeSettings of one method, so that changing temp_temperature reruns only temp.

    temp: decode.temp_temperature. d3: no length normalisation (D3's length_penalty 0) and SASRec's
    assistant at weight g = decode.d3_weight. d3_noassist: the same with g = 1 (assistant off, the value
    the published D3 scripts leave it at). Every other method: temperature 1, length-normalised scores.
    """
    block = config["decode"]
    settings = {key: block[key] for key in _DECODE_SHARED_KEYS}
    settings.update(temperature=1.0, length_normalise=True, assistant_weight=None)
    if wildcards.method == "temp":
        settings["temperature"] = block["temp_temperature"]
    elif wildcards.method in _D3_METHODS:
        settings["length_normalise"] = False
        settings["assistant_weight"] = block["d3_weight"] if wildcards.method == "d3" else 1.0
    return settings


rule decode:
    wildcard_constraints:
        method="|".join(DECODED_METHODS),
    input:
        unpack(get_decode_inputs),
        model=get_tuned_model,
        trie="results/{dataset}/trie/trie.npz",
        test="results/{dataset}/data/test.parquet",
        item_titles="results/{dataset}/data/items.parquet",
        code=[
            "src/flowrec/decode.py",
            "src/flowrec/d3.py",
            "src/flowrec/trie.py",
            "src/flowrec/prompts.py",
            "src/flowrec/model.py",
            "src/flowrec/subsets.py",
            "src/flowrec/stages/decode_test.py",
        ],
    output:
        "results/{dataset}/predictions/{method}.parquet",
    log:
        "logs/decode/{dataset}/{method}.log",
    benchmark:
        "benchmarks/decode/{dataset}/{method}.tsv"
    params:
        decode=get_decode_settings,
        prompt=config["prompt"],
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
    conda:
        "../envs/llm.yaml"
    script:
        "../src/flowrec/stages/decode_test.py"

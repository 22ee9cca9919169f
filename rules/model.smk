# The base model as a save_pretrained folder (results/models/<name>/, model and tokenizer): GGUF sources
# dequantised to fp32, tiny-random built from its seed (flowrec.stages.prepare_model). Only for sources
# that need it (BASE_MODEL in common.smk); hub ids and save_pretrained directories are read in place.


rule prepare_model:
    wildcard_constraints:
        model=re.escape(_CONVERTED) if _CONVERTED else "(?!)",  # the configured model only
    input:
        unpack(get_prepare_model_inputs),
        code=code_of("flowrec.stages.prepare_model"),
    output:
        model_dir=directory("results/models/{model}"),
    log:
        "logs/prepare_model/{model}.log",
    benchmark:
        "benchmarks/prepare_model/{model}.tsv"
    params:
        name_or_path=config["model"]["name_or_path"],
    threads: 1
    resources:
        mem_mb=res.conversion_mb(MODEL_SHAPE),
        runtime=60,
    conda:
        "../envs/llm.yaml"
    script:
        "../src/flowrec/stages/prepare_model.py"

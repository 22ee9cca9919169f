# flowrec: Flower (SIGIR 2025) and its baselines as a Snakemake workflow.
# Read the DAG with `snakemake --dag | dot -Tpng > dag.png`; each rule calls one module of src/flowrec.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/sasrec.smk"
include: "rules/model.smk"
include: "rules/trie.smk"
include: "rules/tune.smk"
include: "rules/infer.smk"
include: "rules/evaluate.smk"
include: "rules/distfit.smk"
include: "rules/afl.smk"
include: "rules/report.smk"


localrules:
    all,


rule all:
    input:
        get_final_outputs(),
    default_target: True

# flowrec: Flower (SIGIR 2025) and its baselines as a Snakemake workflow.
# Read the DAG with `snakemake --dag | dot -Tpng > dag.png`; each rule calls one module of src/flowrec.
import os
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from flowrec.config_checks import load_yaml

# Snakemake's message for a YAML syntax error names neither the file nor the line ("Config file is
# not valid JSON or YAML"); load_yaml names both. A --configfile is read before this file, by
# Snakemake alone: `--verbose` or `python -m flowrec.config_checks FILE` show where its error is.
if os.path.exists("config.yaml"):
    load_yaml("config.yaml")


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/common_distfit.smk"
include: "rules/common_afl.smk"
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
include: "rules/last_good.smk"


# A job that fails loses no finished work: the outputs it replaces are kept when the run starts and
# put back, with their metadata, when it fails (flowrec.last_good, results/.last_good).
onstart:
    keep_last_good()


onsuccess:
    discard_last_good()


onerror:
    restore_last_good()


localrules:
    all,


rule all:
    input:
        get_final_outputs(),
    default_target: True

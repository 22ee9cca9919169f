"""Thin entries, one per Snakemake rule: unpack the rule's input/params/output, call the library."""

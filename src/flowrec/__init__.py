"""flowrec: Flower (flow-guided tuning of LLM recommenders) and its baselines as a Snakemake pipeline."""

__version__ = "0.1.0"

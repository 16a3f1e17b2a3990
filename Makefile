# Two commands for a newcomer: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORES  ?= all
SNAKEMAKE_ARGS ?=
# The embedded default's jobs are small (32 px): on a CPU two one-thread jobs at once get through them
# about 30% faster than one two-thread job (BENCHMARKS.md), so `make run` gives every job one thread
# (the tests' snakemake helper reads this list).
ONE_THREAD := $(foreach r,prepare cache train evaluate analyse robustness compress_half compress_onnx compress_dynamic transfer_predict,$(r)=1)

.PHONY: run test test-fast test-cluster lint dry-run-paper clean env

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## Run the whole workflow on the embedded default (synthetic data, CPU): results/report.html
run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --set-threads $(ONE_THREAD) --workflow-profile profiles/default $(SNAKEMAKE_ARGS)
	@echo "Report: results/report.html"

## The test suite (unit tests and a tiny end-to-end workflow run)
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not cluster" tests

## The workflow on a real one-node SLURM cluster (as root: installs Debian's slurm and munge)
test-cluster: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[slurm]'
	bash tests/cluster/slurm.sh up
	CVM_CLUSTER_TEST=1 $(BIN)/python -m pytest -q -s -m cluster tests; rc=$$?; bash tests/cluster/slurm.sh down; exit $$rc

## Unit tests only (skips the end-to-end workflow tests)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not workflow and not slow and not cluster" tests

## ruff (lint and format) for Python, snakefmt for the rule files, then Snakemake's own lint
lint: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[lint]'
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile workflow/
	$(BIN)/snakemake --lint

## Plan the paper's experiments without running them (needs dataset roots in config/paper.yaml)
dry-run-paper: $(STAMP)
	$(BIN)/snakemake -n --configfile config/paper.yaml

clean:
	rm -rf results logs .snakemake

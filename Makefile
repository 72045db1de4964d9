# The two commands a fresh machine needs: `make demo` and `make test` (each runs `make setup` first).
SHELL := /bin/bash
PY := .venv/bin/python
export OMP_NUM_THREADS ?= 1
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export RAY_DEDUP_LOGS ?= 0

.PHONY: setup demo test bench gpu-check lint clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m pipelines.cli demo --output demo_out

test: setup
	$(PY) -m pytest -m "not gpu" -q

bench: setup
	$(PY) -m bench.run --output bench/results

# On a CUDA machine only (never part of `make test`): paper curation stages, scorer, training MFU, `pytest -m gpu`.
gpu-check: setup
	$(PY) -m bench.gpu_check --output bench/results/GPU.md

lint: setup
	.venv/bin/ruff check packages pipelines tests bench
	.venv/bin/ruff format --check packages pipelines tests bench
	.venv/bin/lint-imports

clean:
	rm -rf demo_out bench/results .pytest_cache

# The README's two commands. Both set up .venv on first use (pinned dependencies,
# CPU torch 2.13.0) and reuse it afterwards.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.langprune-installed
CORES  ?= 2
export PATH := $(CURDIR)/$(BIN):$(PATH)
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo real real-gptq lint test test-fast clean-results

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml --report results/report.html
	@echo "Tables: results/tables/  Figures: results/figures/  Report: results/report.html"

# Real pretrained models (config/real.yaml: Gemma 3 270M, SmolLM2-135M from PyPI GGUF wheels),
# in its own work dir real/ so its UDHR split and results never mix with the toy's.
real: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --directory real --configfile config/real.yaml
	$(BIN)/snakemake --cores $(CORES) --directory real --configfile config/real.yaml --report results/report.html
	@echo "Tables: real/results/tables/  Figures: real/results/figures/  Report: real/results/report.html"

# The same grid with GPTQ 4-bit and 3-bit (g128) of Gemma 3 270M added (config/real_gptq.yaml), in the
# same work dir: the pruned variants `make real` built are reused, and the quantized rows join its tables.
REAL_GPTQ := --directory real --configfile config/real.yaml config/real_gptq.yaml
real-gptq: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) $(REAL_GPTQ)
	$(BIN)/snakemake --cores $(CORES) $(REAL_GPTQ) --report results/report.html
	@echo "Tables: real/results/tables/gemma3-270m/  Heatmaps: real/results/figures/gemma3-270m/heatmaps/gptq_*  Report: real/results/report.html"

# Lint first (seconds): ruff (pyflakes, pycodestyle at 120 columns, import order, imports at module top) and snakefmt,
# both configured in pyproject.toml and pinned in requirements.txt.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/snakefmt --check Snakefile workflow/rules

# The tests, in tiers (markers in pyproject.toml; tests/conftest.py marks the tests that use the shared
# reference run or the SLURM cluster). `make test` runs every tier, as CI does (.ci/run): the unit tests,
# `workflow` (Snakemake: dry runs, the one lint, the reference run of the reduced toy and what reruns,
# reports and caches it), `slurm` (a one-node SLURM, installed when missing), `pypi` (one real model's
# wheel, cached) and `browser` (Chromium renders the report). It runs on TEST_WORKERS pytest-xdist
# workers, one torch thread each; the SLURM tests stay in one worker (one cluster), and the longest
# tests start first. `make test-fast` runs the unit tier alone, between edits: in-process tests on
# tiny models, no Snakemake, SLURM, download or browser.
TEST_WORKERS ?= 2
PYTEST := OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadgroup
TIERS  := workflow or slurm or pypi or browser

test: lint
	$(PYTEST) --durations=15 tests

test-fast: $(STAMP)
	$(PYTEST) -m "not ($(TIERS))" tests

clean-results:
	rm -rf results .snakemake

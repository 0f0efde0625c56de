# Every target does its own set-up: a virtual environment in .venv with pinned packages.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Real MNIST when it sits beside the repo (this project's machines), else $TFPRUNE_MNIST, else download, else the
# MNIST subset bundled in the package (tfprune/resources/mnist_small.npz).
MNIST ?= $(firstword $(wildcard ../shared/data/mnist/mnist.npz) $(TFPRUNE_MNIST))
export TFPRUNE_MNIST := $(abspath $(MNIST))
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install demo test test-bundled test-all lint bench docs clean

$(BIN)/.installed: setup.cfg setup.py pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/tfprune demo --out out

# The suite runs in 2 worker processes (pytest-xdist; one per core of the 2-core CI machine), a test file per worker at a
# time (--dist loadfile: a file's module fixtures are built once). WORKERS=0 runs it in this process (one core).
WORKERS ?= 2
XDIST = $(if $(filter 0,$(WORKERS)),-p no:xdist,-n $(WORKERS) --dist loadfile)
test: install
	$(BIN)/python -m pytest -q $(XDIST) tests

# The fresh-machine path on any machine: the tests ignore ../shared and $$TFPRUNE_MNIST and use the bundled subset.
# By default only the tests that read a data file (marker data_file, see tests/conftest.py): the others get
# byte-identical data in both modes. BUNDLED_TESTS=tests runs everything; exit code 5 (nothing selected) passes.
BUNDLED_TESTS ?= -m "data_file and not slow" tests
test-bundled: install
	TFPRUNE_TEST_DATA=bundled $(BIN)/python -m pytest -q $(XDIST) $(BUNDLED_TESTS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "test-bundled: no tests selected"; else exit $$rc; fi

test-all: install
	$(BIN)/python -m pytest -q $(XDIST) -m "" tests

lint: install
	$(BIN)/ruff check tfprune tfprune_console.py tests examples benchmarks tools

# The docs site: mkdocs + mkdocstrings read the docstrings by static analysis (no TensorFlow import), so
# this installs only the `docs` extra's pinned packages into the venv (creating it if needed), not the
# package itself. --strict: a broken reference or link fails the build. Output in site/ (ignored by git).
DOCS_REQS = $(BIN)/python -c "import configparser as c; p = c.ConfigParser(); p.read('setup.cfg'); print(p['options.extras_require']['docs'])"
$(BIN)/.docs-installed: setup.cfg
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(DOCS_REQS) > $(VENV)/docs-requirements.txt
	$(BIN)/pip install -q -r $(VENV)/docs-requirements.txt
	touch $@

docs: $(BIN)/.docs-installed
	$(BIN)/mkdocs build --strict -d site

clean:
	rm -rf $(VENV) out .pytest_cache site

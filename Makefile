# `make train` and `make test` set everything up on a fresh machine: a .venv with torch
# (2.13.0 CPU, only where no torch is importable yet) and this project installed editable.
VENV   ?= .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# the tests also run the launcher and sweeper plugins (the `sweeps` extra) and read Parquet and Hugging Face
# datasets (the `corpora` extra); `make train` does without
TEST_STAMP := $(VENV)/.installed-test

.PHONY: setup train test format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PYTHON) -m pip install --quiet -e '.[dev,sweeps,corpora]'
	touch $(TEST_STAMP)

train: setup
	$(PYTHON) -m trainer $(ARGS)

# House style first: formatting and lint (ruff, configured in pyproject.toml), then the tests.
test: $(TEST_STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(PYTHON) -m pytest $(ARGS)

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache

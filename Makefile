# Two entry points (see README): `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# CPU-only machines: keep pip on the local CPU build of torch (an unpinned torch pulls a multi-GB CUDA build).
CONSTRAINTS := constraints-cpu.txt
DEMO_OUT ?= runs/demo

.PHONY: demo test gate-demo install install-dev install-hf lint typecheck clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

install: $(BIN)/python
	$(PIP) install --quiet -c $(CONSTRAINTS) -e .

# Tests need the model stack too (BERTScore, and the model adapters' tests): CPU torch via the constraints file.
install-dev: $(BIN)/python
	$(PIP) install --quiet -c $(CONSTRAINTS) -e ".[dev,hf]"

# The heavy model stack (torch, transformers, peft, accelerate, bitsandbytes, bert-score) without dev tools.
install-hf: $(BIN)/python
	$(PIP) install --quiet -c $(CONSTRAINTS) -e ".[hf]"

demo: install
	$(BIN)/medbench run --output $(DEMO_OUT)
	@echo "Run directory: $(DEMO_OUT)/ (results.json, run.json, predictions/<model>/<task>.jsonl, report/index.html)"

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install-dev
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest

# The regression gate on this repository's own demo run, against the checked-in leaderboard/baseline/ (.ci/run runs
# it after the tests): the blind baselines must not regress. A deliberate change: add --update-baseline and commit.
gate-demo: install-dev
	$(BIN)/medbench run --output build/gate-demo --no-cache
	$(BIN)/medbench gate --candidate build/gate-demo --markdown build/gate-demo/gate.md

clean:
	rm -rf $(VENV) build dist *.egg-info runs

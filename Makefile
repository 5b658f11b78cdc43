PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The extras of the README's install line, so the demo's next steps (`report`, `serve`) work.
$(VENV)/.demo: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e ".[examples,report,serve]"
	touch $@

$(VENV)/.dev: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

# PyTorch for the nanotrain example's tests: the CPU build of 2.13.0 (a plain `pip install
# torch`, or another version, would fetch a CUDA build of several GB). Not best effort: if
# it cannot be installed, `make test` stops here instead of skipping those tests.
$(VENV)/.torch: $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	touch $@

demo: $(VENV)/.demo
	$(BIN)/python examples/quickstart/demo.py

test: $(VENV)/.dev $(VENV)/.torch
	$(BIN)/ruff check src tests bench examples
	$(BIN)/python -m pytest -q -ra

# Every bench script (bench/suite.py), one Markdown table per question; the numbers and the
# machine go into docs/benchmarks.md. Takes about 50 minutes; installs OpenEvolve from PyPI
# into bench/.venv-openevolve on first use.
bench: $(VENV)/.dev
	$(BIN)/python bench/suite.py --write-docs docs/benchmarks.md

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests bench examples

clean:
	rm -rf $(VENV) build dist src/*.egg-info

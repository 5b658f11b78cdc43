PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.demo: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e ".[examples]"
	touch $@

$(VENV)/.dev: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

demo: $(VENV)/.demo
	$(BIN)/python examples/quickstart/demo.py

test: $(VENV)/.dev
	$(BIN)/ruff check src tests bench examples
	$(BIN)/python -m pytest -q -ra

bench: $(VENV)/.dev
	$(BIN)/python bench/overhead.py

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests bench examples

clean:
	rm -rf $(VENV) build dist src/*.egg-info

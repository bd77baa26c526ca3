# The two commands of the README. Both set everything up first, in .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test test-all lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: setup  ## set up, then run the main job on the embedded sample data
	$(BIN)/medmeta demo

test: setup  ## set up, then lint and run the default (fast) tests
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not slow"

test-all: setup  ## every test, the slow ones too
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache

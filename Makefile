# The two commands of the README. Both set everything up first, in .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup browser demo test test-all lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: setup  ## set up, then run the main job on the embedded sample data
	$(BIN)/medmeta demo

# The dashboard's browser test needs Debian's chromium (no browser download is possible). As root with apt,
# it is installed; elsewhere the test is skipped and pytest prints why.
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(timeout 600 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq chromium >/dev/null) \
		|| echo "chromium could not be installed: the dashboard's browser test will be skipped"; fi

test: setup browser  ## set up, then lint and run the default (fast) tests
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not slow"

test-all: setup browser  ## every test, the slow ones too
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache

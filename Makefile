# The two commands a user needs are `make run` and `make test`; everything installs into .venv
# from the project's own files, so a fresh machine needs only Python 3.11+ and the registries.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test lint format clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check chunkvault tests

test: lint
	$(BIN)/python -m pytest

format: $(STAMP)
	$(BIN)/ruff format chunkvault tests
	$(BIN)/ruff check --fix chunkvault tests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis

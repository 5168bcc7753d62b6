# Two commands on a fresh machine (see README.md):
#   make quickstart   set up .venv and run the slides' skip-vs-no-skip reproduction (quick profile)
#   make test         set up .venv and run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: quickstart test setup clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

quickstart: setup
	$(BIN)/ablate reproduce skip-vs-noskip --profile quick --json .ablate/skip-vs-noskip-quick.json

test: setup
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .ablate

# Two commands on a fresh machine (see README.md):
#   make quickstart   set up .venv and run the slides' skip-vs-no-skip reproduction (quick profile)
#   make test         set up .venv (with the JAX and PyTorch backends), lint and type-check src/, then run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: quickstart test lint setup backends browser clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

# `make test` trains a tiny study on JAX and PyTorch too (tests/test_backends.py). TORCH is the
# CPU build where one lies on disk (this project's machines); elsewhere PyPI's default build.
TORCH ?= torch==2.13.0
backends: $(VENV)/.backends

$(VENV)/.backends: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet "$(TORCH)" -e ".[jax,torch]"
	touch $@

quickstart: setup
	$(BIN)/ablate reproduce skip-vs-noskip --profile quick --json .ablate/skip-vs-noskip-quick.json

# The suite runs in TEST_WORKERS processes (pytest-xdist; 2: this project's machines have 2 cores),
# each test handed to whichever process is free; TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
test: setup backends browser lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal

# Lint and types first: ruff's rules and mypy's settings are in pyproject.toml.
lint: setup
	$(BIN)/ruff check src
	$(BIN)/mypy

# The report's page is tested in a real headless Chromium (Debian's `chromium`). Installed here when
# missing and we are root with apt-get (as in CI); otherwise that one test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
	  echo "make: chromium not installed; tests/test_report.py::test_page_in_headless_chromium will skip"

clean:
	rm -rf $(VENV) .ablate

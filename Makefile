# Every target works on a fresh clone: it creates .venv and installs prunus with its dev extras first.
# torch is pinned by constraints.txt in every pip command, so pip never swaps in another build of it.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
INSTALLED := $(VENV)/.prunus-installed

# The example plugin package, installed as a real distribution beside prunus: its own tests run after prunus's,
# and prunus's suite checks the plugin tutorial against it (the suite itself tests the built-ins only: its
# conftest turns entry-point autoloading off in the test processes).
TAYLOR_DIR := examples/prunus-taylor
TAYLOR := $(wildcard $(TAYLOR_DIR)/pyproject.toml)
TAYLOR_INSTALLED := $(if $(TAYLOR),$(VENV)/.prunus-taylor-installed)

.PHONY: demo test bench bench-quick clean

demo: $(INSTALLED)
	$(BIN)/python examples/demo.py

test: $(INSTALLED) $(TAYLOR_INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -n 2 tests
ifneq ($(TAYLOR),)
	$(BIN)/pytest $(TAYLOR_DIR)/tests
endif

bench: $(INSTALLED)
	$(BIN)/python benchmarks/bench_core.py --output docs/benchmarks.md

bench-quick: $(INSTALLED)
	$(BIN)/python benchmarks/bench_core.py --quick

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-installs only when the project's metadata or the torch pin changes. A recent setuptools is asked for
# because the example plugin is installed without build isolation, with the venv's own setuptools.
$(INSTALLED): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -c constraints.txt "setuptools>=70.1" -e ".[dev]"
	touch $@

$(VENV)/.prunus-taylor-installed: $(TAYLOR_DIR)/pyproject.toml $(INSTALLED)
	$(PIP) install -c constraints.txt --no-build-isolation --no-deps -e $(TAYLOR_DIR)
	touch $@

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache

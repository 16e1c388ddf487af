# Two entry points for a fresh machine with Python 3.11:
#   make demo   installs drifa-edge with every CPU runtime and runs the end-to-end demo
#   make test   installs the test dependencies and runs the default test suite
PY ?= python3.11
VENV ?= .venv
BIN = $(VENV)/bin
PIP = $(BIN)/python -m pip
EXTRAS ?= all
OUT ?= demo-out
QUICK_OUT ?= demo-quick

.PHONY: demo demo-quick test test-slow lint install install-dev bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

install: $(BIN)/python
	$(PIP) install -q -c constraints.txt -e ".[$(EXTRAS)]"

install-dev: $(BIN)/python
	$(PIP) install -q -c constraints.txt -e ".[$(EXTRAS),dev]"

# --replace: a second `make demo` rewrites $(OUT) when an earlier demo wrote it (never another folder)
demo: install
	$(BIN)/drifa-edge demo --out $(OUT) --replace

demo-quick: install
	$(BIN)/drifa-edge demo --quick --out $(QUICK_OUT) --replace

test: install-dev
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: install-dev
	$(BIN)/python -m pytest -q -m slow

lint: install-dev
	$(BIN)/ruff check drifa_edge tests benchmarks

bench: install
	$(BIN)/python benchmarks/mc_inference.py --out benchmarks/results

clean:
	rm -rf $(OUT) $(QUICK_OUT) .pytest_cache

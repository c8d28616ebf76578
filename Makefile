# Two commands matter: `make up` (set up and run) and `make test` (set up and test).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: up down status test lint unit bench compare memory clean protos

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

up: $(STAMP)
	$(VENV)/bin/feira up

down: $(STAMP)
	$(VENV)/bin/feira down

status: $(STAMP)
	$(VENV)/bin/feira status

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(PY) -m pytest tests/unit -q

test: lint
	$(PY) -m pytest -q -p no:cacheprovider -rP

# Regenerate the gRPC code from protos/ (byte-identical on every run; a test checks it).
protos: $(STAMP)
	$(PY) scripts/gen_protos.py

bench: $(STAMP)
	$(PY) -m benchmarks.cart_add

# Feira against the conventional peer and a bare /ping, one system at a time (25-35 min;
# needs PostgreSQL and Redis, and nothing else on ports 8000 and 8100).
compare: $(STAMP)
	$(PY) -m benchmarks.compare --results-md benchmarks/RESULTS.md

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache

# Every target installs what it needs into .venv by itself (Python 3.11+ on PATH).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck unit bench bench-quick bench-smoke clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is needed")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/delivery-server demo

test: $(STAMP) lint typecheck
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit

clean:
	rm -rf $(VENV) outbox demo-output delivery.db .pytest_cache .mypy_cache .ruff_cache

# Benchmarks (issue 5): our server, the floor and the peers in one run; each prints a table
# and ends with one RESULT line. The peers need the bench extra (Celery, Redis client, psutil).
BENCH_STAMP := $(VENV)/.bench-installed-stamp

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# Two server processes: one per core, as two ECS tasks would share the machine.
bench: $(STAMP) $(BENCH_STAMP)
	$(BIN)/python -m bench.run --emails 500000 --servers 2 --peer-emails 20000

# Within 5 minutes: the peers get smaller slices (Celery ~150-200 emails/s here; the EED
# model is bound by its 1 s poll delay, ~110 emails/s).
bench-quick: $(STAMP) $(BENCH_STAMP)
	$(BIN)/python -m bench.run --emails 20000 --servers 2 --peer-emails 10000 --eed-emails 3000

# For CI: keeps the bench working, asserts nothing about speed.
bench-smoke: $(STAMP) $(BENCH_STAMP)
	$(BIN)/python -m bench.run --emails 300 --peer-emails 100

# Every target installs what it needs into .venv by itself (Python 3.11+ on PATH).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck unit lock bench bench-quick bench-smoke clean infra-synth infra-check

# Reproducible: every package at the dev lock's version and hash (the dev, demo and bench
# extras), then this project itself without resolving anything, built by the locked
# hatchling. The venv's own pip is used as it comes: upgrading it would be the one
# unpinned install.
$(STAMP): requirements-dev.lock pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is needed")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Regenerate both locks from pyproject.toml, keeping every pin that still satisfies it
# (make lock UPGRADE=--upgrade moves everything to the newest allowed). One universal
# resolution serves every platform and Python 3.11+ (the image runs CI's 3.11); the dev lock
# is constrained by the production one, so both pin a shared package alike.
LOCK_OPTIONS = --universal --python-version 3.11 --generate-hashes --quiet \
	--custom-compile-command 'make lock' $(UPGRADE)
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml $(LOCK_OPTIONS) -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra demo --extra bench $(LOCK_OPTIONS) \
		--constraint requirements.lock -o requirements-dev.lock

demo: $(STAMP)
	$(BIN)/delivery-server demo

test: $(STAMP) lint typecheck infra-check
	$(BIN)/pytest

# infra/ (issue 12): the CDK app synthesized by the pinned CDK CLI (infra/package-lock.json)
# into infra/cdk.out/ with the cdk-nag AwsSolutions checks (a finding without a reasoned
# acknowledgement fails it); no AWS call is made, and the CLI fetches no notices and sends
# no telemetry (this machine reaches package registries only). node and npm on PATH.
infra/node_modules/.bin/cdk: infra/package.json infra/package-lock.json
	cd infra && npm ci --no-audit --no-fund --loglevel=error
	touch $@

infra-synth: $(STAMP) infra/node_modules/.bin/cdk
	rm -rf infra/cdk.out
	cd infra && CDK_DISABLE_CLI_TELEMETRY=true node_modules/.bin/cdk synth --quiet \
		--no-notices --no-version-reporting --app "$(abspath $(BIN))/python app.py"

# The CDK app passes mypy --strict (the repository's settings), the synthesized templates
# pass cfn-lint (in the stages' region, infra/cdk.json), and the
# Prometheus rules (deploy/prometheus/) pass promtool's check and their unit tests.
# promtool is Debian's prometheus package (.ci/run installs it).
infra-check: infra-synth
	$(BIN)/mypy infra/delivery_stack
	$(BIN)/cfn-lint --regions eu-west-1 -- infra/cdk.out/*.template.json
	promtool check rules deploy/prometheus/*.rules.yml
	promtool test rules deploy/prometheus/*.test.yml

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/hadolint Dockerfile

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit

clean:
	rm -rf infra/cdk.out infra/node_modules
	rm -rf $(VENV) outbox demo-output delivery.db .pytest_cache .mypy_cache .ruff_cache \
		.import_linter_cache

# Benchmarks (issue 5): our server, the floor and the peers in one run; each prints a table
# and ends with one RESULT line. The peers need the bench extra (Celery, Redis client,
# psutil, py-spy): the dev lock has it.

# Two server processes: one per core, as two ECS tasks would share the machine.
bench: $(STAMP)
	$(BIN)/python -m bench.run --emails 500000 --servers 2 --peer-emails 20000

# Within 5 minutes: the peers get smaller slices (Celery ~150-200 emails/s here; the EED
# model is bound by its 1 s poll delay, ~110 emails/s).
bench-quick: $(STAMP)
	$(BIN)/python -m bench.run --emails 20000 --servers 2 --peer-emails 10000 --eed-emails 3000

# For CI: keeps the bench working, asserts nothing about speed.
bench-smoke: $(STAMP)
	$(BIN)/python -m bench.run --emails 300 --peer-emails 100

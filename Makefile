# Sluice: `make run` starts a local system, `make test` runs every test.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: run test bench deps build lint fmt clean

deps:
	@scripts/ensure-deps.sh

build: deps
	$(CARGO) build --workspace --bins

## Build and start a control plane, an enrolled agent and a demo PostgreSQL
## on loopback, in the foreground. Ctrl-C stops everything.
run: build
	@scripts/run-local.sh

## Every test: unit tests and the end-to-end tests (real processes,
## real PostgreSQL, real clients).
test: build
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		$(CARGO) test --workspace --no-fail-fast; \
	fi

## pgbench through Sluice vs. direct vs. PgBouncer; writes docs/benchmarks.md.
bench: deps
	@command -v pgbouncer >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq pgbouncer postgresql-contrib; } || { echo "error: install pgbouncer (apt-get install pgbouncer)"; exit 1; }
	@bench/run.sh

lint: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf .sluice

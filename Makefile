# Sluice: `make run` starts a local system, `make test` runs every test.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: run test bench fuzz deps build lint fmt clean

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
	@scripts/ensure-drivers.sh
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		$(CARGO) test --workspace --no-fail-fast; \
	fi

## pgbench through Sluice vs. direct vs. PgBouncer; writes docs/benchmarks.md.
bench: deps
	@command -v pgbouncer >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq pgbouncer postgresql-contrib; } || { echo "error: install pgbouncer (apt-get install pgbouncer)"; exit 1; }
	@bench/run.sh

# Coverage-guided fuzzing of every decoder of untrusted input (libFuzzer via
# cargo-fuzz, installed if missing): FUZZ_SECONDS per target (default 60),
# FUZZ_TARGETS to pick some. Findings land in fuzz/libfuzzer/artifacts/.
# `make test` already runs every target over seeds and their mutations.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= pg_startup pg_frontend pg_backend scram sql policy_document compiled_policy mask spool token
fuzz: deps
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@$(CARGO) run -q -p sluice-fuzz --bin fuzz-seeds -- fuzz/libfuzzer/corpus
	@cd fuzz/libfuzzer && for t in $(FUZZ_TARGETS); do \
		echo "== fuzzing $$t for $(FUZZ_SECONDS)s"; \
		$(CARGO) fuzz run --fuzz-dir . --sanitizer none -O $$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096 -timeout=10 || exit 1; \
	done

lint: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf .sluice

# tinydrop: the two commands a person needs are `make run` and `make test`.

CARGO ?= cargo
PORT ?= 8080
DIR ?= ./uploads
# Where cargo puts binaries: $CARGO_TARGET_DIR when set, as cargo does.
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)

.PHONY: run build release test check unit browser-test setup clean

## Build the release binary and serve ./uploads on port 8080.
run: release
	$(TARGET_DIR)/release/tinydrop --port $(PORT) $(DIR)

build:
	$(CARGO) build

release:
	$(CARGO) build --release

## Everything CI checks: formatting, lints, unit and integration tests,
## real tus clients and browser tests (installed when missing).
test: setup check unit browser-test size-check bench-smoke fuzz-smoke

check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --all-targets --features tls -- -D warnings
	RUSTDOCFLAGS=-Dwarnings $(CARGO) doc --no-deps --quiet

## The default build, then the TLS build (its own binary, its own tests).
unit:
	$(CARGO) build
	$(CARGO) test
	$(CARGO) test --features tls --test integration tls

## Installs what the tests use (Debian's chromium, npm and pip test clients), only what is missing.
setup:
	bash tests/setup.sh

browser-test:
	TINYDROP_BIN=$(TARGET_DIR)/debug/tinydrop node tests/browser/run.js

clean:
	$(CARGO) clean

## The release binary stays at most 1 MiB (the project's budget).
MAX_BINARY_BYTES ?= 1048576
.PHONY: size-check
size-check: release
	@size=$$(stat -c %s $(TARGET_DIR)/release/tinydrop); \
	echo "release binary: $$size bytes (budget $(MAX_BINARY_BYTES))"; \
	test $$size -le $(MAX_BINARY_BYTES) || { echo "the release binary is over its 1 MiB budget"; exit 1; }

## Every cargo-fuzz target for FUZZ_SECONDS each (default 60), no sanitizer.
FUZZ_SECONDS ?= 60
.PHONY: fuzz fuzz-smoke
fuzz:
	bash fuzz/run.sh $(FUZZ_SECONDS)

## What `make test` runs: every fuzz target for 30 s.
fuzz-smoke:
	bash fuzz/run.sh 30

## Figures side by side with a raw TCP sink (bench/sink), same run, median
## of interleaved rounds: see bench/bench.py. Needs curl and python3.
## BENCH_ARGS passes options, e.g. BENCH_ARGS="--rounds 5 --size 256M".
.PHONY: bench bench-peers bench-smoke
bench:
	$(CARGO) build --release
	$(CARGO) build --release --manifest-path bench/sink/Cargo.toml --target-dir $(TARGET_DIR)
	python3 bench/bench.py $(BENCH_ARGS)

## What `make test` runs: the bench on tiny data, one round (a few seconds),
## so that its scenarios and every check of stored bytes keep working.
bench-smoke: release
	$(CARGO) build --release --manifest-path bench/sink/Cargo.toml --target-dir $(TARGET_DIR)
	python3 bench/bench.py --smoke

## The same table with miniserve and dufs added (built once into target/peers).
bench-peers:
	@test -x target/peers/bin/miniserve -a -x target/peers/bin/dufs || $(CARGO) install --root target/peers miniserve dufs
	$(MAKE) bench BENCH_ARGS="--peers $(BENCH_ARGS)"

# lambda-shell-extension: build, test, lint, demo.
#   make demo                              # 3 invokes + shutdown against lambda-simulator
#   make demo HANDLER=scripts/fail.sh      # any handler command (relative paths are fine)
#   make demo HANDLER=scripts/flush-on-shutdown.sh SHELL_EXT_EVENTS=SHUTDOWN

CARGO   ?= cargo
BIN     := lambda-shell-extension
HANDLER ?=
# Static build for a Lambda layer (x86_64; use aarch64-unknown-linux-musl for arm64).
MUSL_TARGET ?= x86_64-unknown-linux-musl

.PHONY: all build release release-static test lint fmt demo clean

all: build

build:
	$(CARGO) build --all-targets

release:
	$(CARGO) build --release --bin $(BIN)
	@echo "built target/release/$(BIN)"

# Fully static binary (needs: rustup target add $(MUSL_TARGET)).
release-static:
	$(CARGO) build --release --bin $(BIN) --target $(MUSL_TARGET)
	@echo "built target/$(MUSL_TARGET)/release/$(BIN)"

test:
	$(CARGO) test

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# `cargo run --example` does not build the binary target, so build it first;
# the demo finds it next to its own executable (target/debug/).
demo:
	$(CARGO) build --bin $(BIN)
	$(CARGO) run --example demo -- $(HANDLER)

clean:
	$(CARGO) clean

# lambda-shell-extension: `make help` lists the main targets, one line each.
#   make demo                              # 3 invokes + shutdown against lambda-simulator
#   make demo HANDLER=scripts/fail.sh      # any handler command (relative paths are fine)
#   make demo HANDLER='{ cat; echo; } >> /tmp/events.jsonl'   # shell syntax is passed through as typed
#   make demo HANDLER=scripts/flush-on-shutdown.sh SHELL_EXT_EVENTS=SHUTDOWN
#   make layer                             # dist/lambda-shell-extension-<version>-{x86_64,arm64}.zip

CARGO   ?= cargo
PYTHON  ?= python3
BIN     := lambda-shell-extension
HANDLER ?=
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
# The two Lambda architectures, as static musl builds (linker settings in .cargo/config.toml).
X86_TARGET := x86_64-unknown-linux-musl
ARM_TARGET := aarch64-unknown-linux-musl
# Where cargo puts its output (honours CARGO_TARGET_DIR, as cargo does).
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
X86_BIN    := $(TARGET_DIR)/$(X86_TARGET)/release/$(BIN)
ARM_BIN    := $(TARGET_DIR)/$(ARM_TARGET)/release/$(BIN)
SIZE_BUDGET := 1310720

.PHONY: all help build targets release size layer test lint fmt demo profiles profile-http bench bench-smoke fuzz clean

all: build

help:
	@echo 'make build        debug build of everything (the default target)'
	@echo 'make demo         run the extension against a local Lambda emulator: 3 invokes + shutdown'
	@echo "make demo HANDLER='CMD'                    any handler command, shell syntax included"
	@echo 'make demo HANDLER=scripts/fail.sh          Extension.HandlerFailed; the extension exits 1'
	@echo 'SHELL_EXT_ON_ERROR=continue make demo HANDLER=scripts/fail.sh   failures logged, not fatal'
	@echo 'make demo HANDLER=scripts/timeout.sh       killed at the deadline: Extension.HandlerTimeout'
	@echo 'make demo HANDLER=scripts/append-jsonl.sh  every event appended to /tmp/events.jsonl'
	@echo 'make demo HANDLER=scripts/flush-on-shutdown.sh SHELL_EXT_EVENTS=SHUTDOWN   SHUTDOWN only'
	@echo 'make test         all tests (cargo test, bench smoke run, layer, arm64 under qemu)'
	@echo 'make lint         rustfmt check, clippy and rustdoc, warnings as errors'
	@echo 'make fmt          format the code (cargo fmt --all)'
	@echo 'make release      static release binaries for x86_64 and arm64 (musl)'
	@echo 'make size         the two release binary sizes, against the 1.25 MiB budget'
	@echo 'make layer        the Lambda layer zips in dist/'
	@echo 'make bench        benchmark against the floor and the official crate (BENCH_ARGS=...)'
	@echo 'make profiles     size and start-up at each opt-level (how the release profile was chosen)'
	@echo 'make profile-http instructions and syscalls per event of next_event vs the floor (callgrind, strace)'
	@echo "make fuzz         the $(words $(FUZZ_TARGETS)) fuzz targets one after another, FUZZ_SECONDS=$(FUZZ_SECONDS) s each: $$(( $(words $(FUZZ_TARGETS)) * $(FUZZ_SECONDS) )) s in total (nightly + cargo-fuzz; not in make test)"
	@echo 'make clean        cargo clean and remove dist/'

build:
	$(CARGO) build --all-targets

# rustup is the only way to get the musl standard libraries; skip quietly without it.
targets:
	@if command -v rustup >/dev/null 2>&1; then rustup target add $(X86_TARGET) $(ARM_TARGET); fi

release: targets
	$(CARGO) build --release --bin $(BIN) --target $(X86_TARGET) --target $(ARM_TARGET)

size: release
	@for bin in $(X86_BIN) $(ARM_BIN); do \
		bytes=$$(stat -c %s $$bin); \
		printf '%-60s %8d bytes (%d KiB)\n' $$bin $$bytes $$((bytes / 1024)); \
		if [ $$bytes -gt $(SIZE_BUDGET) ]; then echo "over the 1.25 MiB budget: $$bin" >&2; exit 1; fi; \
	done

layer: release
	@mkdir -p dist
	$(PYTHON) scripts/layer-zip.py $(X86_BIN) dist/$(BIN)-$(VERSION)-x86_64.zip
	$(PYTHON) scripts/layer-zip.py $(ARM_BIN) dist/$(BIN)-$(VERSION)-arm64.zip
	@ls -l dist/$(BIN)-$(VERSION)-*.zip

# Unit and integration tests, a short run of the benchmark driver, then the layer: its zips,
# and both binaries smoke-tested (arm64 under qemu-aarch64).
test:
	$(CARGO) test
	$(MAKE) bench-smoke
	$(MAKE) layer
	$(CARGO) test --test layer -- --ignored

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --no-default-features --lib --examples -- -D warnings
	$(CARGO) clippy -p bench --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --quiet

fmt:
	$(CARGO) fmt --all

# One cargo run builds the binary and the example: `cargo run --example` alone does not build the
# binary, which the demo finds next to its own executable (target/debug/). HANDLER reaches the demo exactly as typed: $(value) keeps make from
# expanding `$`, and it is put in single quotes for the shell (each ' written as '\'').
DEMO_EXE := $(TARGET_DIR)/debug/examples/demo
demo:
	@[ -x $(DEMO_EXE) ] || echo 'make demo: the first run builds the extension and the lambda-simulator emulator (1 to 2 minutes); later runs start in seconds'
	$(CARGO) build --bin $(BIN) --example demo
	DEMO_HANDLER='$(subst ','\'',$(value HANDLER))' $(CARGO) run --example demo

# Size and start-up of the release build at each opt-level (how the profile was chosen).
profiles: targets
	scripts/measure-profiles.sh

# Instructions (callgrind) and syscalls (strace) per event of the library's next_event loop, the
# floor and the official crate, each run with 500 and 1000 events: docs/http-path.md.
#   make profile-http PROFILE_ARGS="N1=200 N2=400 ANNOTATE=1"
PROFILE_ARGS ?=
profile-http: targets
	env $(PROFILE_ARGS) scripts/profile-http.sh

# The benchmark (issue 4): the product side by side with the floor and the official crate, built
# for $(BENCH_TARGET) release in separate cargo runs (each package keeps its own feature set),
# then the bench-driver: one table on stdout, then the telemetry section (throughput and loss of
# --batches batches through a `cat >/dev/null` telemetry command), persistent mode against its
# targets, the extension's fds/threads/RSS early and at the end, the Runtime API proxy per
# invocation against a runtime client straight to the stand-in Runtime API (runtime-direct; target
# for proxy-forward: +100 µs at most); JSON in target/bench/results.json and the per-event chart
# next to it (results.svg).
#   make bench BENCH_ARGS="--rounds 3 --events 200 --programs floor,product-exec"
#   make bench BENCH_ARGS="--rounds 5 --programs proxy-forward,proxy-request-handler,proxy-response-handler"
#   make bench BENCH_ARGS="--batches 500 --programs product-exec,product-telemetry,product-telemetry-only"
#   make bench BENCH_ARGS="--events 10000 --rounds 3 --programs product-persistent"   # fds/RSS at 10 000
#   make bench BENCH_ARGS="--chart-copy docs/bench-per-event.svg"   # the README's chart, to commit
BENCH_TARGET ?= $(X86_TARGET)
BENCH_DIR    := $(TARGET_DIR)/$(BENCH_TARGET)/release
BENCH_ARGS   ?=
bench: targets
	$(CARGO) build --release --bin $(BIN) --target $(BENCH_TARGET)
	$(CARGO) build --release -p bench --target $(BENCH_TARGET)
	$(CARGO) build --release -p official-peer --target $(BENCH_TARGET)
	$(BENCH_DIR)/bench-driver --build "$(BENCH_TARGET) release" --out $(TARGET_DIR)/bench/results.json $(BENCH_ARGS)

# A few events through the driver (debug builds, no official peer): the harness cannot rot, and
# the product must speak the protocol exactly (the driver exits non-zero otherwise); 100
# telemetry batches through the telemetry-only product, none lost; persistent mode with
# bench-ack (its floor floor-nocmd comes with it); the Runtime API proxy with no handler, a
# runtime client through it checking every invocation byte for byte (runtime-direct comes with it).
bench-smoke:
	$(CARGO) build --bin $(BIN)
	$(CARGO) build -p bench
	$(TARGET_DIR)/debug/bench-driver --quick --programs floor,product-exec,product-shutdown-only,product-telemetry,product-telemetry-only,product-persistent,proxy-forward \
		--product $(TARGET_DIR)/debug/$(BIN) --build "debug (smoke)" --out $(TARGET_DIR)/bench/smoke.json

# Fuzzing (docs/fuzzing.md): cargo-fuzz on a nightly toolchain, each target for FUZZ_SECONDS in
# turn. libFuzzer writes what it finds to the first corpus directory, the scratch one under
# fuzz/target/ (ignored by git); the committed seeds in fuzz/corpus/<target> are only read.
# Crashes land in fuzz/artifacts/<target>/ and stop the run. listener_http keeps its listener
# and threads to the end (and the listener forgets abandoned connections): no leak check there.
#   make fuzz FUZZ_SECONDS=600 FUZZ_TARGETS="event framing"
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= event command_line config framing listener_http
FUZZ_CARGO   ?= cargo +nightly
fuzz:
	@echo "fuzzing $(FUZZ_TARGETS): $(FUZZ_SECONDS) s each"
	@for target in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/target/corpus/$$target && \
		(cd fuzz && $(FUZZ_CARGO) fuzz run -O $$target target/corpus/$$target corpus/$$target -- \
			-max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
			$$([ $$target = listener_http ] && echo -detect_leaks=0)) || exit 1; \
	done

clean:
	$(CARGO) clean
	rm -rf dist

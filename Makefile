# SwiftXen — every entry point. `make demo` and `make test` do all set-up on a fresh Debian machine.
SHELL := /bin/bash
SWIFT        ?= swift
SWIFT_FLAGS  ?=
CONFIG_BENCH ?= release
# Debian packages the build, the tests, the demo and the benchmarks use (installed only when missing); gdb
# prints where a hung unit test waits (scripts/unit-test.sh).
# gcc and libc6-dev build the bench guest's static random-read tool (scripts/xen/bench-randread.c).
APT_PACKAGES := libxen-dev xenstore-utils pkg-config nbdkit qemu-utils libnbd-bin fio openssl python3-libnbd gdb \
                gcc libc6-dev

# Fuzzing (`make fuzz`, scripts/fuzz.sh): seconds per target; CI runs a short pass of every target inside `make test`.
FUZZ_SECONDS    ?= 60
CI_FUZZ_SECONDS ?= 20

.PHONY: setup build test unit-test docs examples demo bench lint format xen-test xen-bench fuzz sanitize clean

setup:
	@missing=""; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "make setup: installing$$missing"; \
	  if [ "$$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	else echo "make setup: all Debian packages present"; fi

build: setup
	$(SWIFT) build $(SWIFT_FLAGS) -Xswiftc -warnings-as-errors

unit-test: setup
	$(SWIFT) build $(SWIFT_FLAGS) --build-tests -Xswiftc -warnings-as-errors
	SWIFT=$(SWIFT) SWIFT_FLAGS="$(SWIFT_FLAGS)" scripts/unit-test.sh

# The real-Xen tier runs after the unit tests whenever QEMU can run here (scripts/xen/can-run.sh says why
# not otherwise), and always under CI=true so CI never skips it silently. XEN_TEST=0 skips it.
# Under CI=true (or FUZZ=1) a short fuzzing pass runs first: every target for CI_FUZZ_SECONDS, two at a time.
test: unit-test
	$(MAKE) --no-print-directory docs
	$(MAKE) --no-print-directory examples
	@if [ "$${CI:-}" = true ] || [ "$${FUZZ:-}" = 1 ]; then \
	  $(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(CI_FUZZ_SECONDS) FUZZ_JOBS=$${FUZZ_JOBS:-2}; fi
	@if [ "$${CI:-}" = true ] || scripts/xen/can-run.sh; then $(MAKE) --no-print-directory xen-test; fi

# DocC documentation of every library product (swift-docc-plugin), warnings as errors: one archive per
# product under $(DOCS_DIR)/ (`swift package --disable-sandbox preview-documentation --target X` serves one).
# The compiler flags are unit-test's, so after it the symbol graphs come from the same build (no rebuild).
DOCS_DIR     ?= .build-docs
DOC_TARGETS  := $(shell sed -n 's/^ *\.library.name: "\([A-Za-z0-9]*\)".*/\1/p' Package.swift)
docs: setup
	$(SWIFT) package $(SWIFT_FLAGS) -Xswiftc -warnings-as-errors --allow-writing-to-directory $(DOCS_DIR) \
	  generate-documentation $(addprefix --target ,$(DOC_TARGETS)) --output-path $(DOCS_DIR) --warnings-as-errors

# Examples/: a package of its own that depends on this one by path and uses only its public products, as a
# user's would; built (warnings as errors) and tested in its own scratch path, Examples/.build. The docs'
# copies of its code (a swift block introduced by its file name) must be verbatim (scripts/check-doc-examples.py).
examples: setup
	scripts/check-doc-examples.py
	$(SWIFT) build $(SWIFT_FLAGS) --package-path Examples --build-tests -Xswiftc -warnings-as-errors
	$(SWIFT) test $(SWIFT_FLAGS) --package-path Examples --skip-build

# Boot Xen 4.17 + a Linux dom0 under QEMU TCG (no network) and run xen-test-runner in it, once per
# xenstored (C and OCaml). Fetches what it needs from Debian into .build-xen; see Documentation/RealXen.md.
xen-test: setup
	scripts/xen/xen-test.sh

# The real-Xen benchmark (not part of `make test`): the tier booted once per xenstored with only the runner's
# `bench` group, our BlockBack beside the kernel's xen-blkback and QEMU's qdisk inside one guest; one table per
# boot (row, ours, peer, ratio). XB_QUICK=1: the short mode CI runs. See Documentation/RealXen.md.
xen-bench: setup
	scripts/xen/xen-bench.sh

# The whole unit suite under AddressSanitizer, in its own scratch path. ASan leaves SIGSEGV alone
# (handle_segv=0): the exit tests prove that a late access to a released grant page faults, and expect the
# plain signal. Any ASan report fails the run.
sanitize: setup
	$(SWIFT) build $(SWIFT_FLAGS) --build-tests --sanitize=address --scratch-path .build-asan
	ASAN_OPTIONS=handle_segv=0:detect_leaks=0:halt_on_error=1 SWIFT_BACKTRACE=enable=no \
	  $(SWIFT) test $(SWIFT_FLAGS) --skip-build --sanitize=address --scratch-path .build-asan 2>&1 \
	  | tee .build-asan/sanitize.log; status=$${PIPESTATUS[0]}; \
	  if grep -q "ERROR: AddressSanitizer" .build-asan/sanitize.log; then echo "make sanitize: ASan reports"; exit 1; fi; \
	  exit $$status

# Coverage-guided fuzzing of every untrusted input (libFuzzer + AddressSanitizer, Fuzz/): each target for
# FUZZ_SECONDS; fails on a crash, an invariant trap, a timeout (> 1 s per input) or a leak.
fuzz: setup
	FUZZ_SECONDS=$(FUZZ_SECONDS) SWIFT=$(SWIFT) scripts/fuzz.sh

demo: setup
	$(SWIFT) build $(SWIFT_FLAGS) --product swiftxen
	$$($(SWIFT) build $(SWIFT_FLAGS) --show-bin-path)/swiftxen demo

# The nbd-server group times the CLI's copy against nbdcopy, whole processes: the CLI is built as a deployed
# Swift tool is (the Swift runtime linked statically: no dynamic loading of a dozen Swift libraries at each
# start, ~5 ms), in a scratch path of its own so that the bench binary's build is not redone.
CLI_SCRATCH ?= .build-cli
bench: setup
	$(SWIFT) build $(SWIFT_FLAGS) -c $(CONFIG_BENCH) --product swiftxen-bench
	$(SWIFT) build $(SWIFT_FLAGS) -c $(CONFIG_BENCH) --static-swift-stdlib --scratch-path $(CLI_SCRATCH) \
	  --product swiftxen
	SWIFTXEN_CLI=$$($(SWIFT) build $(SWIFT_FLAGS) -c $(CONFIG_BENCH) --scratch-path $(CLI_SCRATCH) \
	  --show-bin-path)/swiftxen $$($(SWIFT) build $(SWIFT_FLAGS) -c $(CONFIG_BENCH) --show-bin-path)/swiftxen-bench

lint:
	$(SWIFT) format lint --strict --recursive Sources Tests Package.swift Fuzz/Package.swift Fuzz/Sources \
	  Examples/Package.swift Examples/Sources Examples/Tests
	scripts/check-target-imports.py

format:
	$(SWIFT) format format --in-place --recursive Sources Tests Package.swift Fuzz/Package.swift Fuzz/Sources \
	  Examples/Package.swift Examples/Sources Examples/Tests

clean:
	rm -rf .build Fuzz/.build .build-fuzz Examples/.build

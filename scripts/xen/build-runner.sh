#!/bin/bash
# build-runner.sh — build the dom0 test runner: release, Swift stdlib linked statically (glibc and the
# libxen* libraries stay dynamic; the initramfs step copies them). A separate scratch path keeps the
# debug build in .build untouched. Prints the binary's path on stdout.
set -euo pipefail
. "$(dirname "$0")/common.sh"

SWIFT=${SWIFT:-swift}
SCRATCH=$XT_DIR/swift
EXTRA=()
# XT_ASAN=1: an AddressSanitizer runner (its own scratch path, so the plain build stays warm).
if [ "${XT_ASAN:-0}" = 1 ]; then SCRATCH=$XT_DIR/swift-asan; EXTRA=(-Xswiftc -sanitize=address); fi
cd "$XT_ROOT"
xt_log "building xen-test-runner (release, static Swift stdlib, scratch $SCRATCH${EXTRA:+, ASan})"
timeout "${XT_BUILD_TIMEOUT:-2400}" "$SWIFT" build -c release --static-swift-stdlib \
    --scratch-path "$SCRATCH" --product xen-test-runner -Xswiftc -warnings-as-errors "${EXTRA[@]}" >&2
BIN=$("$SWIFT" build -c release --scratch-path "$SCRATCH" --show-bin-path)/xen-test-runner
[ -x "$BIN" ] || xt_die "no runner binary at $BIN"
echo "$BIN"

#!/bin/bash
# build-runner.sh — build the dom0 test runner: release, Swift stdlib linked statically (glibc and the
# libxen* libraries stay dynamic; the initramfs step copies them). A separate scratch path keeps the
# debug build in .build untouched. Prints the binary's path on stdout.
set -euo pipefail
. "$(dirname "$0")/common.sh"

SWIFT=${SWIFT:-swift}
SCRATCH=$XT_DIR/swift
cd "$XT_ROOT"
xt_log "building xen-test-runner (release, static Swift stdlib, scratch $SCRATCH)"
timeout "${XT_BUILD_TIMEOUT:-2400}" "$SWIFT" build -c release --static-swift-stdlib \
    --scratch-path "$SCRATCH" --product xen-test-runner -Xswiftc -warnings-as-errors >&2
BIN=$("$SWIFT" build -c release --scratch-path "$SCRATCH" --show-bin-path)/xen-test-runner
[ -x "$BIN" ] || xt_die "no runner binary at $BIN"
echo "$BIN"

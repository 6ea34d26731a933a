#!/bin/bash
# xen-bench.sh — `make xen-bench`: the real-Xen tier booted once per xenstored (XT_VARIANTS, default "c ocaml")
# with only the runner's `bench` group (Sources/xen-test-runner/BenchChecks.swift), which prints one table per
# boot: each row our figure, the peer's and the ratio. QEMU's Xen device model goes into the initramfs for the
# qdisk rows (XT_QDISK=1). XB_QUICK=1: the short mode (16 MiB passes, 2 s random-read runs) that CI runs.
# Everything else is xen-test.sh's (fetch, build, initramfs, boot, retry of a boot-stage failure); the tables
# are collected again at the end, with the date and the number of boots, for the README's Benchmarks section.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/common.sh"

export XT_ONLY=bench XT_QDISK=1 XB_QUICK=${XB_QUICK:-0}
OUT=$XT_DIR/bench.out
"$HERE/xen-test.sh" | tee "$OUT"
status=${PIPESTATUS[0]}
boots=$(grep -c -E '^\[[a-z]+\] [0-9]+ passed' "$OUT")
echo
echo "xen-bench: $(date -u '+%Y-%m-%d %H:%M UTC'), $boots boot(s) (Xen 4.17 under QEMU TCG, $(nproc) host cores)$(
    [ "$XB_QUICK" = 1 ] && echo ", quick mode")"
grep -a 'XT-BENCH ' "$OUT" | sed 's/^XT-BENCH //'
exit "$status"

#!/usr/bin/env bash
# `make fuzz`: builds the fuzz targets of Fuzz/ (libFuzzer + AddressSanitizer, release, -enable-testing) and runs
# each for FUZZ_SECONDS (default 60) on its committed seed corpus plus a working corpus under .build-fuzz/
# (the build itself goes to Fuzz/.build).
# Fails on any crash, invariant trap, timeout (> 1 s for one input) or leak (LeakSanitizer, part of the
# toolchain's ASan runtime), printing the input that did it. Ends with one line per target: executions,
# executions per second, coverage (cov: edges, ft: features) and corpus size.
#
#   FUZZ_SECONDS=1800 make fuzz          # the long run
#   FUZZ_TARGETS="nbd-reply blkif-back"   # a subset (default: all, `swiftxen-fuzz list`)
#   FUZZ_JOBS=2                          # targets run side by side
#   FUZZ_RUNS=10000000                   # also stop a target after this many executions
#   FUZZ_NICE=10                         # niceness of the fuzzers on a shared machine
#   FUZZ_TIMEOUT=1                       # seconds one input may take (a starved, niced run needs more)
set -euo pipefail
cd "$(dirname "$0")/.."
SWIFT=${SWIFT:-swift}
SECONDS_EACH=${FUZZ_SECONDS:-60}
JOBS=${FUZZ_JOBS:-1}
RUNS=${FUZZ_RUNS:--1}
NICE=${FUZZ_NICE:-0}
TIMEOUT=${FUZZ_TIMEOUT:-1}
WORK=${FUZZ_WORK:-.build-fuzz}
# One -sanitize flag with both: two separate flags keep only the last (no coverage instrumentation).
# ld.gold stops with "internal error in format_file_lineno" on this binary; the toolchain's lld links it.
BUILD=(--package-path Fuzz -c release -Xswiftc -sanitize=fuzzer,address -Xswiftc -enable-testing
    -Xswiftc -Xclang-linker -Xswiftc -fuse-ld=lld)

started=$(date +%s)
echo "fuzz: building Fuzz/ (libFuzzer + AddressSanitizer)"
$SWIFT build "${BUILD[@]}"
BIN="$($SWIFT build "${BUILD[@]}" --show-bin-path)/swiftxen-fuzz"
built=$(date +%s)
echo "fuzz: build took $((built - started)) s"

TARGETS=${FUZZ_TARGETS:-$("$BIN" list)}
mkdir -p "$WORK"

# One target: its working corpus first (libFuzzer adds new inputs there), then the committed seeds.
run_target() {
    local target=$1 corpus="$WORK/corpus/$1" log="$WORK/$1.log" dict=()
    mkdir -p "$corpus" "$WORK/artifacts"
    rm -f "$WORK/$target.note"
    [ -f "Fuzz/dict/$target.dict" ] && dict=(-dict="Fuzz/dict/$target.dict")
    set +e
    SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=detect_leaks=1:quarantine_size_mb=16 \
        nice -n "$NICE" "$BIN" "$target" -max_total_time="$SECONDS_EACH" -runs="$RUNS" -timeout="$TIMEOUT" \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$WORK/artifacts/$target-" "${dict[@]}" \
        "$corpus" "Fuzz/corpus/$target" >"$log" 2>&1
    local rc=$?
    set -e
    # libFuzzer's timeout is wall-clock time: on a machine shared with other builds a process can stall past
    # it. A timeout counts only if the saved input is slow again when run alone.
    if [ "$rc" = 70 ]; then
        local input
        input=$(ls -t "$WORK/artifacts/$target-timeout-"* 2>/dev/null | head -1)
        if [ -n "$input" ] && SWIFT_BACKTRACE=enable=no "$BIN" "$target" -timeout="$TIMEOUT" -runs=3 "$input" \
            >"$WORK/$target.recheck.log" 2>&1; then
            echo "stall: $(basename "$input") ran in time alone ($(grep -o 'in [0-9]* ms' \
                "$WORK/$target.recheck.log" | tail -1))" >"$WORK/$target.note"
            rm -f "$input"
            rc=0
        fi
    fi
    echo "$rc" >"$WORK/$target.rc"
}

summary() {
    local target=$1 log="$WORK/$1.log" rc last
    rc=$(cat "$WORK/$target.rc")
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    local execs speed cov ft corp slowest
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([^ ]*\).*/\1/p' <<<"$last")
    slowest=$(sed -n 's/^stat::slowest_unit_time_sec: *//p' "$log")
    printf '%-16s %12s %9s %7s %7s %12s %8s  %s\n' "$target" "${execs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" \
        "${corp:-?}" "${slowest:-?}" "$([ "$rc" = 0 ] && echo ok || echo "FAILED (exit $rc)")"
    if [ -f "$WORK/$target.note" ]; then echo "                 ($(cat "$WORK/$target.note"))"; fi
}

set -- $TARGETS
while [ $# -gt 0 ]; do
    batch=()
    for _ in $(seq "$JOBS"); do
        [ $# -gt 0 ] || break
        batch+=("$1")
        shift
    done
    echo "fuzz: running ${batch[*]} for ${SECONDS_EACH} s each"
    for target in "${batch[@]}"; do run_target "$target" & done
    wait
done

failed=0
echo
printf '%-16s %12s %9s %7s %7s %12s %8s  %s\n' target executions exec/s cov ft corpus slowest result
for target in $TARGETS; do
    summary "$target"
    if [ "$(cat "$WORK/$target.rc")" != 0 ]; then failed=1; fi
done
for target in $TARGETS; do
    if [ "$(cat "$WORK/$target.rc")" != 0 ]; then
        echo
        echo "fuzz: $target failed; the end of $WORK/$target.log:"
        grep -v '^#[0-9]\|^INFO\|^\s*$' "$WORK/$target.log" | tail -40
        ls "$WORK/artifacts/$target-"* 2>/dev/null | sed 's/^/  input: /' || true
        echo "  reproduce: $BIN $target <input>"
    fi
done
echo "fuzz: $(($(date +%s) - started)) s in all ($((built - started)) s build)"
exit $failed

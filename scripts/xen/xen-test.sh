#!/bin/bash
# xen-test.sh — the real-Xen tier, end to end (what `make xen-test` runs):
#   fetch Debian packages -> build the static Swift runner -> pack the dom0 initramfs ->
#   boot Xen 4.17 + dom0 under QEMU TCG once per xenstored (C xenstored, then oxenstored) -> summary.
# A boot-stage failure (QEMU or the kernel never reaching the runner) is retried once; test failures are not.
# Exit status 0 only when every boot reached the runner and every check passed.
#
# Environment: XT_VARIANTS (default "c ocaml"), XT_DIR (default .build-xen), the timeouts of boot.sh.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/common.sh"

T0=$(xt_now)
phase() { # phase NAME CMD...: run one step, time it, stop on failure
    local name=$1 s rc; shift
    s=$(xt_now)
    "$@"; rc=$?
    xt_log "phase $name: $(xt_since "$s")s (exit $rc)"
    [ "$rc" -eq 0 ] || xt_die "phase $name failed"
}

phase fetch timeout 1800 "$HERE/fetch.sh"
RUNNER_FILE=$XT_DIR/runner-path
phase build bash -c "'$HERE/build-runner.sh' > '$RUNNER_FILE'"
phase initramfs timeout 300 "$HERE/initramfs.sh" "$(cat "$RUNNER_FILE")"

total_pass=0; total_fail=0; status=0; lines=()
for variant in ${XT_VARIANTS:-c ocaml}; do
    for attempt in 1 2; do
        s=$(xt_now)
        out=$("$HERE/boot.sh" "$variant" "$XT_OUT/console-$variant.log")
        rc=$?
        [ -n "$out" ] && echo "$out"
        xt_log "boot $variant attempt $attempt: exit $rc in $(xt_since "$s")s"
        [ "$rc" -eq 2 ] && [ "$attempt" -eq 1 ] && { xt_log "boot-stage failure: retrying once"; continue; }
        break
    done
    summary=$(echo "$out" | grep -o -E '[0-9]+ passed, [0-9]+ failed' | tail -1)
    case "$rc" in
        0|1) p=${summary%% passed*}; f=${summary#*, }; f=${f%% failed*}
             total_pass=$((total_pass + p)); total_fail=$((total_fail + f))
             lines+=("$variant: $summary") ;;
        2) lines+=("$variant: BOOT FAILURE (twice)") ;;
        *) lines+=("$variant: RUNNER CRASHED OR HUNG${summary:+ after $summary}") ;;
    esac
    [ "$rc" -eq 0 ] || status=1
done

xt_log "xen-test finished in $(xt_since "$T0")s: ${lines[*]/%/;}"
echo "xen-test: $total_pass passed, $total_fail failed"
exit $status
